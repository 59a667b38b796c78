"""Admin endpoints under ``/_sim``: faults at runtime, reset, submission log, stats.

``POST /_sim/faults`` takes the fault JSON (a rules list, ``{"faults": [...]}`` or the flat
shorthand) plus optional ``"mode": "replace"|"append"`` (default replace), ``"seed"`` and
``"batch_duration_s"``; ``GET`` shows the live rules with how often each fired.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from orchestration.simulator.faults import FaultConfigError, parse_faults
from orchestration.simulator.routing import json_response, state_of
from orchestration.simulator.state import SimState


def _faults_view(state: SimState) -> dict[str, Any]:
    return {
        "seed": state.seed,
        "batch_duration_s": state.batch_duration_s,
        "faults": state.faults.to_json(),
    }


async def get_faults(request: web.Request) -> web.StreamResponse:
    return json_response(_faults_view(state_of(request)))


async def set_faults(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    try:
        body = orjson.loads(await request.read() or b"[]")
        rules = parse_faults(body)
        mode = body.get("mode", "replace") if isinstance(body, dict) else "replace"
        if mode not in {"replace", "append"}:
            raise FaultConfigError("mode must be replace or append")
        if isinstance(body, dict) and "batch_duration_s" in body:
            duration = float(body["batch_duration_s"])
            if duration < 0:
                raise FaultConfigError("batch_duration_s must be >= 0")
            state.batch_duration_s = duration
        if isinstance(body, dict) and "seed" in body:
            state.seed = int(body["seed"])
            state.rng = random.Random(state.seed)
    except (orjson.JSONDecodeError, FaultConfigError, TypeError, ValueError) as exc:
        return json_response({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
    if mode == "append":
        state.faults.extend(rules)
    else:
        state.faults.replace(rules)
    return json_response(_faults_view(state))


async def reset(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    body = orjson.loads(await request.read() or b"{}")
    if isinstance(body, dict) and "seed" in body:
        state.seed = int(body["seed"])
    state.reset()
    return json_response({"ok": True, **_faults_view(state)})


async def submissions(request: web.Request) -> web.StreamResponse:
    """``?summary=1`` counters, ``?keys=a,b`` per-key counts, else the full log as JSONL."""
    state = state_of(request)
    if request.query.get("summary") not in {None, "", "0", "false"}:
        return json_response(state.submissions.summary())
    keys = request.query.get("keys")
    if keys:
        return json_response(
            {"counts": {k: state.submissions.count(k) for k in keys.split(",") if k}}
        )
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    fh = state.submissions.open_for_read()
    try:
        while chunk := await state.run_in_thread(fh.read, 1 << 16):
            await response.write(chunk)
    finally:
        fh.close()
    await response.write_eof()
    return response


async def stats(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    statuses: Counter[str] = Counter(f"{b.provider}.{b.status}" for b in state.batches.values())
    return json_response(
        {
            "uptime_s": round(state.now() - state.started_at, 3),
            "calls": dict(state.calls),
            "faults_fired": dict(state.faults_fired),
            "direct_rpm": state.direct_rpm(),
            "limit_windows": state.windows.current(state.now()),
            "batches": dict(statuses),
            "files": len(state.files),
            "submissions_total": state.submissions.total,
            "responder": state.responder_label,
            "batch_duration_s": state.batch_duration_s,
        }
    )


async def health(request: web.Request) -> web.StreamResponse:
    return json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/_sim/faults", get_faults)
    r.add_post("/_sim/faults", set_faults)
    r.add_post("/_sim/reset", reset)
    r.add_get("/_sim/submissions", submissions)
    r.add_get("/_sim/stats", stats)
    r.add_get("/_sim/health", health)
