"""Anthropic-compatible endpoints under ``/anthropic/v1``: Message Batches and Messages.

Shapes are those the ``anthropic`` SDK parses (``MessageBatch``,
``MessageBatchIndividualResponse``, ``Message``; checked by the tests). Like the real API:
requests are inline (no files), ``custom_id`` must match ``^[a-zA-Z0-9_-]{1,64}$`` and be unique
(400 ``invalid_request_error`` otherwise), at most 100,000 requests / 256 MB per batch, no
metadata, and ``results_url`` is set only once the batch has ended; it points back at this
simulator (``/anthropic/v1/messages/batches/{id}/results``).

The enqueued-token limit answers ``429 rate_limit_error`` with a ``retry-after``: Anthropic
documents a limit on batch requests waiting in the processing queue, enforced as a rate limit
(the message names the enqueued limit so clients can tell it from a per-minute limit).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from orchestration.simulator import shapes
from orchestration.simulator.faults import STREAM_FAULTS
from orchestration.simulator.routing import error_response, json_response, state_of, wrap
from orchestration.simulator.state import (
    ANTHROPIC_CUSTOM_ID,
    ANTHROPIC_MAX_REQUESTS,
    DAY_S,
    BatchRec,
    SimState,
)
from orchestration.simulator.streaming import send_file

PROVIDER = "anthropic"


def _err(
    status: int, message: str, *, type_: str | None = None, retry_after: float | None = None
) -> web.Response:
    return error_response(PROVIDER, status, message, type_=type_, retry_after=retry_after)


def _base_url(request: web.Request, state: SimState) -> str:
    if state.config.public_url:
        return state.config.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


def batch_json(b: BatchRec, base_url: str) -> dict[str, Any]:
    """``MessageBatch``."""
    if b.terminal:
        processing_status = "ended"
    elif b.cancelling_at is not None:
        processing_status = "canceling"
    else:
        processing_status = "in_progress"
    counts = b.counts or {
        "processing": b.n,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    return {
        "id": b.id,
        "type": "message_batch",
        "processing_status": processing_status,
        "request_counts": counts,
        "ended_at": shapes.rfc3339(b.ended_at) if b.terminal else None,
        "created_at": shapes.rfc3339(b.created_at),
        "expires_at": shapes.rfc3339(b.created_at + DAY_S),
        "archived_at": None,
        "cancel_initiated_at": shapes.rfc3339(b.cancelling_at),
        "results_url": (
            f"{base_url}/anthropic/v1/messages/batches/{b.id}/results" if b.terminal else None
        ),
    }


def _ingest(body: bytes, input_path: Any) -> tuple[int, int, str | None, str | None, list[str]]:
    """Validate and store the inline requests: (n, est. tokens, model, error, custom_ids)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0, 0, None, "The request body is not valid JSON.", []
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        return 0, 0, None, "requests: Field required (a non-empty list).", []
    if len(requests) > ANTHROPIC_MAX_REQUESTS:
        return 0, 0, None, f"requests: at most {ANTHROPIC_MAX_REQUESTS} requests per batch.", []
    seen: set[str] = set()
    ids: list[str] = []
    tokens = 0
    model: str | None = None
    for i, req in enumerate(requests):
        if not isinstance(req, dict):
            return 0, 0, None, f"requests.{i}: Input should be an object.", []
        cid = req.get("custom_id")
        if not isinstance(cid, str) or not ANTHROPIC_CUSTOM_ID.match(cid):
            return (
                0,
                0,
                None,
                (f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"),
                [],
            )
        if cid in seen:
            return 0, 0, None, f"requests.{i}.custom_id: duplicate custom_id {cid!r} in batch.", []
        seen.add(cid)
        params = req.get("params")
        if not isinstance(params, dict):
            return 0, 0, None, f"requests.{i}.params: Field required.", []
        if not isinstance(params.get("model"), str):
            return 0, 0, None, f"requests.{i}.params.model: Field required.", []
        max_tokens = params.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return 0, 0, None, f"requests.{i}.params.max_tokens: must be an integer >= 1.", []
        messages = params.get("messages")
        if not isinstance(messages, list) or not messages:
            return 0, 0, None, f"requests.{i}.params.messages: Field required.", []
        if params.get("stream"):
            return 0, 0, None, f"requests.{i}.params.stream: not supported in batches.", []
        system, user = shapes.anthropic_prompt(params.get("system"), messages)
        tokens += shapes.estimate_tokens((system or "") + user)
        model = model or params["model"]
        ids.append(cid)
    with open(input_path, "wb", buffering=1 << 20) as fh:
        for req in requests:
            fh.write(orjson.dumps({"custom_id": req["custom_id"], "params": req["params"]}))
            fh.write(b"\n")
    return len(requests), tokens, model, None, ids


async def create_batch(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    limit = state.config.max_anthropic_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _err(
            413, "Request exceeds the maximum allowed size of 256 MB.", type_="request_too_large"
        )
    body = await request.read()
    if len(body) > limit:
        return _err(
            413, "Request exceeds the maximum allowed size of 256 MB.", type_="request_too_large"
        )
    batch_id = state.next_id("msgbatch_")
    input_path = state.anthropic_dir / f"{batch_id}.requests.jsonl"
    n, tokens, model, problem, ids = await state.run_in_thread(_ingest, body, input_path)
    del body
    if problem is not None:
        input_path.unlink(missing_ok=True)
        return _err(400, problem)
    over = state.enqueued_limit(PROVIDER, "batches_create", model, tokens)
    if over is not None:
        input_path.unlink(missing_ok=True)
        return _err(
            429,
            "Your organization's enqueued token limit for batch requests awaiting processing "
            f"({int(over.param('limit')):,} tokens) would be exceeded. Retry after in-progress "
            "batches have ended.",
            type_="rate_limit_error",
            retry_after=float(over.param("retry_after", 60.0)),
        )
    batch = BatchRec(
        provider=PROVIDER,
        id=batch_id,
        created_at=time.time(),
        n=n,
        est_tokens=tokens,
        model=model,
        input_path=input_path,
        rng_seed=state.rng.getrandbits(64),
        status="in_progress",
        in_progress_at=time.time(),
    )
    batch.outcome, batch.outcome_params = state.plan_outcome(PROVIDER)
    await state.run_in_thread(
        partial(
            state.submissions.record_many, ids, provider=PROVIDER, kind="batch", batch_id=batch_id
        )
    )
    state.register(batch)
    return json_response(batch_json(batch, _base_url(request, state)))


async def list_batches(request: web.Request) -> web.StreamResponse:
    """Newest first; ``after_id`` pages towards older batches, ``before_id`` towards newer."""
    state = state_of(request)
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        return _err(400, "limit: Input should be a valid integer.")
    if not 1 <= limit <= 1000:
        return _err(400, "limit: must be between 1 and 1000.")
    newest_first = state.order[PROVIDER][::-1]
    after_id = request.query.get("after_id")
    before_id = request.query.get("before_id")
    try:
        if after_id:
            start = newest_first.index(after_id) + 1
            page_ids = newest_first[start : start + limit]
            has_more = start + limit < len(newest_first)
        elif before_id:
            end = newest_first.index(before_id)
            start = max(0, end - limit)
            page_ids = newest_first[start:end]
            has_more = start > 0
        else:
            page_ids = newest_first[:limit]
            has_more = limit < len(newest_first)
    except ValueError:
        return _err(400, "Unknown pagination cursor.")
    base = _base_url(request, state)
    data = []
    for bid in page_ids:
        b = state.batches[bid]
        await state.refresh(b)
        data.append(batch_json(b, base))
    return json_response(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def _get_rec(request: web.Request) -> BatchRec | None:
    b = state_of(request).batches.get(request.match_info["batch_id"])
    return b if b is not None and b.provider == PROVIDER else None


def _not_found(batch_id: str) -> web.Response:
    return _err(404, f"Message batch {batch_id!r} not found.", type_="not_found_error")


async def get_batch(request: web.Request) -> web.StreamResponse:
    b = _get_rec(request)
    if b is None:
        return _not_found(request.match_info["batch_id"])
    state = state_of(request)
    await state.refresh(b)
    return json_response(batch_json(b, _base_url(request, state)))


async def cancel_batch(request: web.Request) -> web.StreamResponse:
    b = _get_rec(request)
    if b is None:
        return _not_found(request.match_info["batch_id"])
    state = state_of(request)
    state.request_cancel(b)  # a no-op on an ended batch
    return json_response(batch_json(b, _base_url(request, state)))


async def batch_results(request: web.Request) -> web.StreamResponse:
    b = _get_rec(request)
    if b is None:
        return _not_found(request.match_info["batch_id"])
    state = state_of(request)
    await state.refresh(b)
    if not b.terminal or b.results_path is None:
        return _err(
            404,
            f"Results for message batch {b.id!r} are not available until it has ended.",
            type_="not_found_error",
        )
    cut = state.faults.first_firing(STREAM_FAULTS, PROVIDER, "results", state.rng)
    if cut is not None:
        state.fire_log(cut)
    return await send_file(
        request,
        b.results_path,
        cut_fraction=None if cut is None else float(cut.param("fraction", 0.5)),
        content_type="application/binary",
    )


async def create_message(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _err(400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _err(400, "The request body must be a JSON object.")
    model = body.get("model")
    max_tokens = body.get("max_tokens")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        return _err(400, "model: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return _err(400, "max_tokens: Field required (an integer >= 1)")
    if not isinstance(messages, list) or not messages:
        return _err(400, "messages: Field required")
    if body.get("stream"):
        return _err(400, "stream: the simulator does not stream messages.")
    system, user = shapes.anthropic_prompt(body.get("system"), messages)
    input_tokens = shapes.estimate_tokens((system or "") + user)
    over = state.check_limits(
        provider=PROVIDER, op="messages", model=model, tokens=input_tokens + max_tokens
    )
    if over is not None:
        wait, rule = over
        what = "requests" if rule.fault == "rpm" else "input tokens"
        return _err(
            429,
            f"This request would exceed the rate limit for your organization of "
            f"{int(rule.param('limit'))} {what} per minute.",
            type_="rate_limit_error",
            retry_after=wait,
        )
    # Seed by the engine's request id when sent (see openai_api.chat_completions).
    key = request.headers.get("x-judge-custom-id") or shapes.prompt_hash(model, system, user)
    text = state.direct_text(provider=PROVIDER, model=model, system=system, user=user, seed=key)
    text, truncated = shapes.cap_output(text, max_tokens)
    state.submissions.record(key, provider=PROVIDER, kind="direct")
    state.note_direct()
    message_id = state.next_id("msg_")
    return json_response(
        shapes.anthropic_message(
            message_id=message_id,
            model=model,
            text=text,
            input_tokens=input_tokens,
            output_tokens=shapes.estimate_tokens(text),
            truncated=truncated,
        ),
        headers={"request-id": f"req_{message_id[4:]}"},
    )


def add_routes(app: web.Application, prefix: str = "/anthropic/v1") -> None:
    r = app.router
    r.add_post(f"{prefix}/messages/batches", wrap(PROVIDER, "batches_create", create_batch))
    r.add_get(f"{prefix}/messages/batches", wrap(PROVIDER, "batches_list", list_batches))
    r.add_get(f"{prefix}/messages/batches/{{batch_id}}", wrap(PROVIDER, "batches_get", get_batch))
    r.add_post(
        f"{prefix}/messages/batches/{{batch_id}}/cancel",
        wrap(PROVIDER, "batches_cancel", cancel_batch),
    )
    r.add_get(
        f"{prefix}/messages/batches/{{batch_id}}/results", wrap(PROVIDER, "results", batch_results)
    )
    r.add_post(f"{prefix}/messages", wrap(PROVIDER, "messages", create_message))
