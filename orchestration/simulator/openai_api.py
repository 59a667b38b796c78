"""OpenAI-compatible endpoints under ``/openai/v1``: Files, Batches, Chat Completions.

Shapes follow the OpenAPI subset in shared/conformance (validated by the tests). Behaviour
follows the documented API where the simulator needs it: a batch input must be an uploaded
``purpose=batch`` ``.jsonl`` file of at most 50,000 requests for one model and one endpoint;
validation problems and the enqueued-token limit surface as a ``failed`` batch (as the real
API does), not as an error on ``POST /batches``.
"""

from __future__ import annotations

import os
import shutil
import time
from functools import partial
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from orchestration.simulator import shapes
from orchestration.simulator.faults import STREAM_FAULTS
from orchestration.simulator.routing import (
    error_response,
    json_response,
    state_of,
    wrap,
)
from orchestration.simulator.state import (
    DAY_S,
    OPENAI_MAX_REQUESTS,
    BatchRec,
    FileRec,
)
from orchestration.simulator.streaming import send_file

PROVIDER = "openai"
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
BATCH_ENDPOINTS = frozenset(
    {
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
    }
)


def _err(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    return error_response(PROVIDER, status, message, param=param, code=code)


def _not_found(kind: str, obj_id: str) -> web.Response:
    return _err(404, f"No such {kind} object: {obj_id}", param="id")


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _err(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return _err(400, "The request body must be a JSON object.")
    return body


# --- files ------------------------------------------------------------------------------------


async def create_file(request: web.Request) -> web.StreamResponse:
    """Multipart upload, streamed to disk chunk by chunk."""
    state = state_of(request)
    if not request.content_type.startswith("multipart/"):
        return _err(400, "Expected a multipart/form-data body.")
    reader = await request.multipart()
    purpose: str | None = None
    filename: str | None = None
    file_id = state.next_id("file-")
    path = state.files_dir / f"{file_id}.upload"
    size = 0
    too_big = False
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or "upload.jsonl"
            with path.open("wb") as fh:
                while chunk := await part.read_chunk(1 << 16):
                    size += len(chunk)
                    if size > state.config.max_upload_bytes:
                        too_big = True
                        continue  # drain the rest, keep nothing
                    fh.write(chunk)
        else:
            await part.release()
    if filename is None:
        return _err(400, "Missing required parameter: 'file'.", param="file")
    problem: web.Response | None = None
    if too_big:
        problem = _err(400, "File is too large for the Batch API (max 200 MB).", param="file")
    elif purpose is None:
        problem = _err(400, "Missing required parameter: 'purpose'.", param="purpose")
    elif purpose not in FILE_PURPOSES:
        problem = _err(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose")
    elif purpose == "batch" and not filename.endswith(".jsonl"):
        problem = _err(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
    if problem is not None:
        path.unlink(missing_ok=True)
        return problem
    assert purpose is not None
    rec = state.files[file_id] = FileRec(file_id, filename, purpose, size, int(time.time()), path)
    return json_response(rec.to_json())


async def get_file(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    rec = state.files.get(request.match_info["file_id"])
    if rec is None:
        return _not_found("File", request.match_info["file_id"])
    return json_response(rec.to_json())


async def file_content(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    rec = state.files.get(request.match_info["file_id"])
    if rec is None:
        return _not_found("File", request.match_info["file_id"])
    cut = state.faults.first_firing(STREAM_FAULTS, PROVIDER, "files_content", state.rng)
    if cut is not None:
        state.fire_log(cut)
    return await send_file(
        request, rec.path, cut_fraction=None if cut is None else float(cut.param("fraction", 0.5))
    )


async def delete_file(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    file_id = request.match_info["file_id"]
    rec = state.files.pop(file_id, None)
    if rec is None:
        return _not_found("File", file_id)
    rec.path.unlink(missing_ok=True)  # batches keep their own hard link to their input
    return json_response({"id": file_id, "object": "file", "deleted": True})


# --- batches ----------------------------------------------------------------------------------


def batch_json(b: BatchRec) -> dict[str, Any]:
    """``Batch``; unset optional fields are omitted (see shapes module docstring)."""
    created = int(b.created_at)
    status = b.status
    out: dict[str, Any] = {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": status,
        "created_at": created,
        "expires_at": created + DAY_S,
        "request_counts": b.counts
        or {"total": 0 if status == "failed" else b.n, "completed": 0, "failed": 0},
        "metadata": b.metadata,
    }
    if b.model:
        out["model"] = b.model
    if b.validation_errors:
        out["errors"] = {"object": "list", "data": b.validation_errors}
    if b.output_file_id:
        out["output_file_id"] = b.output_file_id
    if b.error_file_id:
        out["error_file_id"] = b.error_file_id
    if b.in_progress_at is not None:
        out["in_progress_at"] = int(b.in_progress_at)
    if b.finalizing_at is not None:
        out["finalizing_at"] = int(b.finalizing_at)
    if b.cancelling_at is not None:
        out["cancelling_at"] = int(b.cancelling_at)
    if b.ended_at is not None and status in {"completed", "failed", "expired", "cancelled"}:
        out[f"{status}_at"] = int(b.ended_at)
    return out


def _scan_input(
    path: Any, endpoint: str
) -> tuple[int, int, str | None, list[dict[str, Any]], list[str]]:
    """Validate an input file line by line: (n, est. tokens, model, errors, custom_ids)."""
    errors: list[dict[str, Any]] = []
    ids: list[str] = []
    seen: set[str] = set()
    model: str | None = None
    tokens = 0
    n = 0

    def bad(code: str, message: str, line: int, param: str | None = None) -> None:
        if len(errors) < 100:
            errors.append({"code": code, "message": message, "param": param, "line": line})

    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            n += 1
            try:
                req = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad("invalid_json_line", "This line is not parseable as valid JSON.", lineno)
                continue
            if not isinstance(req, dict):
                bad("invalid_json_line", "Each line must be a JSON object.", lineno)
                continue
            cid = req.get("custom_id")
            if not isinstance(cid, str) or not cid:
                bad("missing_required_parameter", "Missing custom_id.", lineno, "custom_id")
                continue
            if cid in seen:
                bad(
                    "duplicate_custom_id",
                    f"The custom_id {cid!r} is not unique.",
                    lineno,
                    "custom_id",
                )
                continue
            seen.add(cid)
            if req.get("method") != "POST":
                bad("invalid_method", "Only POST is supported.", lineno, "method")
            if req.get("url") != endpoint:
                bad(
                    "invalid_url",
                    f"The url must match the batch endpoint {endpoint}.",
                    lineno,
                    "url",
                )
            body = req.get("body")
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                bad("missing_required_parameter", "Missing body.model.", lineno, "body.model")
                continue
            if model is None:
                model = body["model"]
            elif body["model"] != model:
                bad(
                    "mismatched_model",
                    "All requests in a batch must use the same model.",
                    lineno,
                    "body.model",
                )
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                bad("missing_required_parameter", "Missing body.messages.", lineno, "body.messages")
                continue
            system, user = shapes.openai_prompt(messages)
            tokens += shapes.estimate_tokens((system or "") + user)
            ids.append(cid)
    if n == 0:
        bad("empty_file", "The input file has no requests.", 0)
    if n > OPENAI_MAX_REQUESTS:
        bad("too_many_requests", f"A batch can contain at most {OPENAI_MAX_REQUESTS} requests.", 0)
    return n, tokens, model, errors, ids


def _link_input(src: Any, dst: Any) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


async def create_batch(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    file_id = body.get("input_file_id")
    endpoint = body.get("endpoint")
    window = body.get("completion_window")
    metadata = body.get("metadata")
    if not isinstance(file_id, str) or file_id not in state.files:
        return _err(
            400, f"Invalid 'input_file_id': {file_id!r}. File not found.", param="input_file_id"
        )
    rec = state.files[file_id]
    if rec.purpose != "batch":
        return _err(400, "The input file must have purpose 'batch'.", param="input_file_id")
    if endpoint not in BATCH_ENDPOINTS:
        return _err(400, f"Invalid 'endpoint': {endpoint!r}.", param="endpoint")
    if endpoint != "/v1/chat/completions":
        return _err(
            400,
            f"The simulator only runs /v1/chat/completions batches, not {endpoint}.",
            param="endpoint",
        )
    if window != "24h":
        return _err(
            400, "Invalid 'completion_window': only '24h' is supported.", param="completion_window"
        )
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > 16:
            return _err(400, "metadata must be an object with at most 16 keys.", param="metadata")
        for k, v in metadata.items():
            if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
                return _err(
                    400,
                    "metadata keys must be at most 64 characters and values strings of at most 512.",
                    param="metadata",
                )
    batch_id = state.next_id("batch_")
    input_path = state.files_dir / f"{batch_id}.input.jsonl"
    await state.run_in_thread(_link_input, rec.path, input_path)
    n, tokens, model, errors, ids = await state.run_in_thread(_scan_input, input_path, endpoint)
    batch = BatchRec(
        provider=PROVIDER,
        id=batch_id,
        created_at=time.time(),
        n=n,
        est_tokens=tokens,
        model=model,
        input_path=input_path,
        rng_seed=state.rng.getrandbits(64),
        input_file_id=file_id,
        endpoint=endpoint,
        completion_window=window,
        metadata=metadata,
        validation_errors=errors,
    )
    if not errors:
        limit = state.enqueued_limit(PROVIDER, "batches_create", model, tokens)
        if limit is not None:
            batch.validation_errors = [
                {
                    "code": "token_limit_exceeded",
                    "message": (
                        f"Enqueued token limit reached for {model} in organization org-simulator. "
                        f"Limit: {int(limit.param('limit')):,} enqueued tokens. Please try again "
                        "once some in_progress batches have been completed."
                    ),
                    "param": None,
                    "line": None,
                }
            ]
    if not batch.validation_errors:
        batch.outcome, batch.outcome_params = state.plan_outcome(PROVIDER)
        await state.run_in_thread(
            partial(
                state.submissions.record_many,
                ids,
                provider=PROVIDER,
                kind="batch",
                batch_id=batch_id,
            )
        )
    state.register(batch)
    return json_response(batch_json(batch))


async def list_batches(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        return _err(400, "Invalid 'limit'.", param="limit")
    if not 1 <= limit <= 100:
        return _err(400, "'limit' must be between 1 and 100.", param="limit")
    newest_first = state.order[PROVIDER][::-1]
    start = 0
    after = request.query.get("after")
    if after:
        try:
            start = newest_first.index(after) + 1
        except ValueError:
            return _err(400, f"Invalid 'after' cursor: {after!r}.", param="after")
    page_ids = newest_first[start : start + limit]
    data = []
    for bid in page_ids:
        b = state.batches[bid]
        await state.refresh(b)
        data.append(batch_json(b))
    out: dict[str, Any] = {
        "object": "list",
        "data": data,
        "has_more": start + limit < len(newest_first),
    }
    if data:
        out["first_id"] = data[0]["id"]
        out["last_id"] = data[-1]["id"]
    return json_response(out)


def _get_batch_rec(request: web.Request) -> BatchRec | None:
    b = state_of(request).batches.get(request.match_info["batch_id"])
    return b if b is not None and b.provider == PROVIDER else None


async def get_batch(request: web.Request) -> web.StreamResponse:
    b = _get_batch_rec(request)
    if b is None:
        return _not_found("Batch", request.match_info["batch_id"])
    await state_of(request).refresh(b)
    return json_response(batch_json(b))


async def cancel_batch(request: web.Request) -> web.StreamResponse:
    b = _get_batch_rec(request)
    if b is None:
        return _not_found("Batch", request.match_info["batch_id"])
    if b.terminal:
        return error_response(
            PROVIDER,
            409,
            f"Cannot cancel a batch with status '{b.status}'.",
            type_="invalid_request_error",
        )
    state_of(request).request_cancel(b)
    return json_response(batch_json(b))


# --- chat -------------------------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        return _err(400, "Missing required parameter: 'model'.", param="model")
    if not isinstance(messages, list) or not messages:
        return _err(400, "Missing required parameter: 'messages'.", param="messages")
    if body.get("stream"):
        return _err(400, "The simulator does not stream chat completions.", param="stream")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return _err(400, "Invalid 'max_completion_tokens'.", param="max_completion_tokens")
    system, user = shapes.openai_prompt(messages)
    prompt_tokens = shapes.estimate_tokens((system or "") + user)
    over = state.check_limits(
        provider=PROVIDER, op="chat", model=model, tokens=prompt_tokens + (max_tokens or 0)
    )
    if over is not None:
        wait, rule = over
        kind = "requests" if rule.fault == "rpm" else "tokens"
        return error_response(
            PROVIDER,
            429,
            f"Rate limit reached for {model} on {kind} per min: Limit {int(rule.param('limit'))}. "
            f"Please try again in {wait:.3f}s.",
            type_=kind,
            code="rate_limit_exceeded",
            retry_after=wait,
        )
    # Seed by the engine's request id when sent (each attempt differs, like batch rows);
    # identical prompts from different samples must not get identical answers.
    key = request.headers.get("x-judge-custom-id") or shapes.prompt_hash(model, system, user)
    text = state.direct_text(provider=PROVIDER, model=model, system=system, user=user, seed=key)
    text, truncated = shapes.cap_output(text, max_tokens)
    state.submissions.record(key, provider=PROVIDER, kind="direct")
    state.note_direct()
    completion_id = state.next_id("chatcmpl-")
    return json_response(
        shapes.chat_completion(
            completion_id=completion_id,
            model=model,
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=shapes.estimate_tokens(text),
            truncated=truncated,
            created=int(time.time()),
        ),
        headers={"x-request-id": f"req_{completion_id[9:]}"},
    )


def add_routes(app: web.Application, prefix: str = "/openai/v1") -> None:
    r = app.router
    r.add_post(f"{prefix}/files", wrap(PROVIDER, "files_create", create_file))
    r.add_get(f"{prefix}/files/{{file_id}}", wrap(PROVIDER, "files_get", get_file))
    r.add_get(f"{prefix}/files/{{file_id}}/content", wrap(PROVIDER, "files_content", file_content))
    r.add_delete(f"{prefix}/files/{{file_id}}", wrap(PROVIDER, "files_delete", delete_file))
    r.add_post(f"{prefix}/batches", wrap(PROVIDER, "batches_create", create_batch))
    r.add_get(f"{prefix}/batches", wrap(PROVIDER, "batches_list", list_batches))
    r.add_get(f"{prefix}/batches/{{batch_id}}", wrap(PROVIDER, "batches_get", get_batch))
    r.add_post(
        f"{prefix}/batches/{{batch_id}}/cancel", wrap(PROVIDER, "batches_cancel", cancel_batch)
    )
    r.add_post(f"{prefix}/chat/completions", wrap(PROVIDER, "chat", chat_completions))
