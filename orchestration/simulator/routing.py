"""Per-route plumbing shared by both provider APIs: auth, call stats, transport faults.

Each route is wrapped with its ``(provider, op)`` so fault rules can aim at it. Transport
faults are applied in rule order: ``latency``/``timeout`` stall (``timeout`` is meant to outlast
the client's timeout), ``http_*``/``quota`` answer with the provider's error shape, and
``drop_connection`` closes the socket without a response. With ``"when": "after"`` a
``timeout``/``drop_connection`` happens *after* the handler did its work: the provider accepted
the request (a batch exists, a call was billed) but the client never hears about it, which is
exactly the unknown-outcome case (PROOF.md F8) the engine must recover from.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from orchestration.simulator import shapes
from orchestration.simulator.faults import TRANSPORT_FAULTS, FaultRule
from orchestration.simulator.state import SimState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATE_KEY: web.AppKey[SimState] = web.AppKey("sim_state", SimState)


def state_of(request: web.Request) -> SimState:
    return request.app[STATE_KEY]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def retry_headers(retry_after: float | None) -> dict[str, str]:
    """``retry-after`` (whole seconds, >= 1, as the OpenAPI subset says) and ``retry-after-ms``."""
    if retry_after is None:
        return {}
    return {
        "retry-after": str(max(1, math.ceil(retry_after))),
        "retry-after-ms": str(max(1, round(retry_after * 1000))),
    }


def error_response(
    provider: str,
    status: int,
    message: str,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
    request_id: str = "req_simulator",
) -> web.Response:
    """An error in the provider's own envelope."""
    headers = retry_headers(retry_after)
    if provider == "firecrawl":  # search_api: Firecrawl's {"success": false, "error": ...}
        return json_response({"success": False, "error": message}, status, headers)
    if provider == "anthropic":
        etype = type_ or shapes.ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        headers["request-id"] = request_id
        return json_response(shapes.anthropic_error(etype, message, request_id), status, headers)
    if type_ is None:
        type_ = (
            "server_error"
            if status >= 500
            else "rate_limit_exceeded"
            if status == 429
            else "invalid_request_error"
        )
    headers["x-request-id"] = request_id
    return json_response(
        shapes.openai_error(message, type_, code=code, param=param), status, headers
    )


def _fault_response(provider: str, rule: FaultRule) -> web.Response:
    retry_after = rule.param("retry_after")
    ra = float(retry_after) if retry_after is not None else None
    if rule.fault == "http_429":
        if provider == "anthropic":
            return error_response(
                provider,
                429,
                "Number of request tokens has exceeded your per-minute rate limit.",
                retry_after=ra if ra is not None else 1.0,
            )
        return error_response(
            provider,
            429,
            "Rate limit reached for requests (simulated).",
            type_="requests",
            code="rate_limit_exceeded",
            retry_after=ra if ra is not None else 1.0,
        )
    if rule.fault == "quota":
        if provider == "anthropic":
            return error_response(
                provider,
                402,
                "Your credit balance is too low to access the Anthropic API.",
                type_="billing_error",
            )
        return error_response(
            provider,
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type_="insufficient_quota",
            code="insufficient_quota",
        )
    status = {"http_500": 500, "http_503": 503, "http_529": 529}[rule.fault]
    if provider == "anthropic":
        msg = "Overloaded" if status == 529 else "Internal server error (simulated)."
        return error_response(provider, status, msg, retry_after=ra)
    msg = (
        "The engine is currently overloaded, please try again later."
        if status in {503, 529}
        else "The server had an error while processing your request. Sorry about that!"
    )
    return error_response(provider, status, msg, retry_after=ra)


def drop(request: web.Request) -> web.Response:
    """Close the socket: the client sees the connection end without (the rest of) a response."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


def _authorized(provider: str, request: web.Request) -> bool:
    if provider == "anthropic":
        return bool(request.headers.get("x-api-key") or request.headers.get("authorization"))
    auth = request.headers.get("authorization", "")
    return auth.lower().startswith("bearer ") and len(auth) > 7


def wrap(provider: str, op: str, handler: Handler) -> Handler:
    """The handler with stats, auth and the transport faults of ``(provider, op)``."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        state = state_of(request)
        state.calls[f"{provider}.{op}"] += 1
        after: list[FaultRule] = []
        for rule in state.faults.matching(TRANSPORT_FAULTS, provider, op):
            if not state.faults.fire(rule, state.rng):
                continue
            state.fire_log(rule)
            if rule.param("when", "before") == "after":
                after.append(rule)
                continue
            if rule.fault == "latency":
                jitter = float(rule.param("jitter_s", 0.0))
                await state.sleep(float(rule.param("sleep_s", 0.1)) + state.rng.random() * jitter)
                continue
            if rule.fault == "timeout":
                await state.sleep(float(rule.param("sleep_s", 600.0)))
                continue
            if rule.fault == "drop_connection":
                return drop(request)
            return _fault_response(provider, rule)
        if not _authorized(provider, request):
            return error_response(
                provider,
                401,
                "Missing or invalid API key (simulator).",
                type_="authentication_error"
                if provider == "anthropic"
                else "invalid_request_error",
                code="invalid_api_key" if provider == "openai" else None,
            )
        response = await handler(request)
        for rule in after:
            if rule.fault in {"timeout", "latency"}:
                await state.sleep(float(rule.param("sleep_s", 600.0)))
            elif rule.fault == "drop_connection":
                return drop(request)
            else:  # an error status although the work was done (e.g. a 500 after creating)
                return _fault_response(provider, rule)
        return response

    return wrapped
