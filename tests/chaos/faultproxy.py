"""A small asyncio TCP fault proxy for PROOF.md F6 (network faults between worker and provider).

Workers point ``JUDGE_SIMULATOR_URL`` at the proxy; the proxy forwards to the simulator and,
per *connection* (HTTP keep-alive reuses one for many requests, so a faulted connection dies
and the client opens a new one, which is judged afresh), picks one mode with seeded
probabilities:

* ``latency``: every upstream chunk is delayed by ``latency_s`` (timeouts must not fire for
  plain slowness below the limit);
* ``reset``: the response starts (headers and part of the body), then the socket is reset
  (``SO_LINGER 0``): the client sees ECONNRESET mid-body;
* ``truncate``: the same, but closed cleanly (FIN) after part of the body: a short read
  against ``Content-Length``;
* ``blackhole``: the request is swallowed and nothing ever comes back: only the client's
  read timeout ends it (no worker may hang);
* ``pass``: untouched.

Why not ``tc netem``: it needs network namespaces and root-only qdisc changes that would hit
every other process on loopback; a proxy confines the faults to the workers under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field

MODES = ("latency", "reset", "truncate", "blackhole")


@dataclass
class ProxyConfig:
    latency: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    blackhole: float = 0.0
    latency_s: float = 0.2

    def choose(self, rng: random.Random) -> str:
        roll = rng.random()
        for mode in MODES:
            p = float(getattr(self, mode))
            if roll < p:
                return mode
            roll -= p
        return "pass"


@dataclass
class FaultProxy:
    """``FaultProxy(upstream_port=...).start()``; ``url``; ``configure(...)``; ``stop()``."""

    upstream_port: int
    upstream_host: str = "127.0.0.1"
    seed: int = 0
    config: ProxyConfig = field(default_factory=ProxyConfig)
    stats: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, **probabilities: float) -> None:
        """Set mode probabilities (and ``latency_s``); unspecified modes become 0."""
        with self._lock:
            self.config = ProxyConfig(**probabilities)

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._conns):
                writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            mode = self.config.choose(self._rng)
            latency_s = self.config.latency_s
            cut_fraction = self._rng.uniform(0.1, 0.9)
        self.stats[mode] += 1
        self._conns.add(client_w)
        try:
            if mode == "blackhole":
                # Swallow everything until the client gives up (its read timeout).
                while await client_r.read(65536):
                    pass
                return
            try:
                up_r, up_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            except OSError:
                return
            self._conns.add(up_w)
            upstream = asyncio.ensure_future(self._pipe(client_r, up_w))
            try:
                await self._downstream(up_r, client_w, mode, latency_s, cut_fraction)
            finally:
                upstream.cancel()
                up_w.close()
                self._conns.discard(up_w)
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass
        finally:
            self._conns.discard(client_w)
            with contextlib.suppress(Exception):
                client_w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()

    async def _downstream(
        self,
        up_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        mode: str,
        latency_s: float,
        cut_fraction: float,
    ) -> None:
        cut_done = False
        while data := await up_r.read(65536):
            if mode == "latency":
                await asyncio.sleep(latency_s)
            if mode in ("reset", "truncate") and not cut_done:
                head_end = data.find(b"\r\n\r\n")
                body_start = head_end + 4 if head_end >= 0 else 0
                cut = body_start + max(1, int((len(data) - body_start) * cut_fraction))
                client_w.write(data[: min(cut, len(data) - 1) or 1])
                await client_w.drain()
                cut_done = True
                self.stats[f"{mode}_fired"] += 1
                if mode == "reset":
                    sock = client_w.get_extra_info("socket")
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                    client_w.transport.abort()
                else:
                    client_w.close()
                return
            client_w.write(data)
            await client_w.drain()
