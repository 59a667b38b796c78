"""Server factory: the aiohttp app, a background-thread runner for tests, and a foreground one.

URL layout (one port, both providers):

- ``<url>/openai/v1/...``     OpenAI-compatible (SDK ``base_url = <url>/openai/v1``)
- ``<url>/anthropic/v1/...``  Anthropic-compatible (SDK ``base_url = <url>/anthropic``; the SDK
  adds ``/v1/...`` itself)
- ``<url>/firecrawl/v2/search`` Firecrawl-compatible news search (also ``/v2/search``, see
  ``search_api``)
- ``<url>/_sim/...``          admin: faults, reset, submissions, stats, health
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from orchestration.simulator import admin_api, anthropic_api, openai_api, search_api
from orchestration.simulator.config import SimulatorConfig
from orchestration.simulator.routing import STATE_KEY, error_response
from orchestration.simulator.state import SimState

log = logging.getLogger(__name__)

# nginx's convention for "the client closed the connection before the response".
CLIENT_CLOSED_REQUEST = 499


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unexpected exceptions become a 500 in the provider's error envelope (and a log line).

    A client that goes away mid-request (a worker killed or timed out while uploading) is
    routine for a provider: one INFO line, not aiohttp's ERROR traceback for every such
    request, which buried real failures in the logs of chaos runs and demos.
    """
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        log.info("client went away during %s %s", request.method, request.path)
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except Exception:
        log.exception("simulator handler failed: %s %s", request.method, request.path)
        provider = "anthropic" if request.path.startswith("/anthropic/") else "openai"
        if request.path.startswith(search_api.SEARCH_PATHS):
            provider = search_api.PROVIDER
        return error_response(provider, 500, "Simulator internal error.")


def build_app(config: SimulatorConfig) -> web.Application:
    """The simulator as an aiohttp application (state is ``app[STATE_KEY]``)."""
    state = SimState(config)
    app = web.Application(
        client_max_size=config.max_anthropic_body_bytes + (1 << 20), middlewares=[_errors]
    )
    app[STATE_KEY] = state
    openai_api.add_routes(app)
    anthropic_api.add_routes(app)
    search_api.add_routes(app)
    admin_api.add_routes(app)

    async def _cleanup(_: web.Application) -> None:
        state.stopping.set()
        await asyncio.get_running_loop().run_in_executor(None, state.close)

    app.on_cleanup.append(_cleanup)
    return app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(host: str) -> bool:
    return host in {"127.0.0.1", "::1", "localhost"} or host.startswith("127.")


@dataclass
class SimulatorHandle:
    """A simulator running in a background thread (tests, demo)."""

    url: str
    app: web.Application
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _runner: web.AppRunner = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def state(self) -> SimState:
        return self.app[STATE_KEY]

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/openai/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"{self.url}/anthropic"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, wake stalled handlers, remove an owned temp data dir; idempotent."""
        if not self._thread.is_alive():
            return

        async def _shutdown() -> None:
            self.state.stopping.set()
            await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)


def run_in_thread(config: SimulatorConfig | None = None) -> SimulatorHandle:
    """Start a simulator on ``config.host`` (a free port when ``port == 0``) in a daemon thread."""
    config = config or SimulatorConfig()
    loop = asyncio.new_event_loop()
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    sock = _bind(config.host, config.port)
    ready = threading.Event()
    failure: list[BaseException] = []

    def _main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=_main, name="provider-simulator", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise RuntimeError("provider simulator failed to start") from failure[0]
    return SimulatorHandle(url=_url(sock), app=app, _loop=loop, _runner=runner, _thread=thread)


def run_forever(config: SimulatorConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then shut down cleanly."""

    async def _serve() -> None:
        app = build_app(config)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        sock = _bind(config.host, config.port)
        await web.SockSite(runner, sock).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready(_url(sock))
        try:
            await stop.wait()
        finally:
            app[STATE_KEY].stopping.set()
            await runner.cleanup()

    asyncio.run(_serve())
