"""Parsing result lines into :class:`ResultRow` (shared by both adapters, no I/O here).

A line that is not JSON, or lacks a usable ``custom_id``, is *malformed*: if its custom_id can
still be read off the raw text (e.g. a line cut short after the id) the request is reported as
a ``MALFORMED`` row so the engine retries exactly that one; otherwise the line is skipped and
counted, and the engine finds the id missing from the stream (``MISSING``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from orchestration.transport.providers.base import ErrorClass, ResultRow, StreamStats
from orchestration.transport.providers.errors import classify_row_error

RAW_CAP = 100_000  # characters of a raw line kept for forensics on non-ok rows

_CUSTOM_ID = re.compile(r'"custom_id"\s*:\s*"((?:[^"\\]|\\.){1,256})"')


def recover_custom_id(line: str) -> str | None:
    m = _CUSTOM_ID.search(line)
    if m is None:
        return None
    try:
        value = orjson.loads(f'"{m.group(1)}"')
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) and value else None


def _malformed(line: str, why: str) -> ResultRow | None:
    cid = recover_custom_id(line)
    if cid is None:
        return None
    return ResultRow(
        custom_id=cid,
        ok=False,
        error_class=ErrorClass.MALFORMED,
        error_message=f"malformed result line: {why}",
        raw=line[:RAW_CAP],
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _load(line: str) -> tuple[dict[str, Any] | None, str | None, ResultRow | None]:
    """(object, custom_id, None) or (None, None, malformed-row-or-None)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, None, _malformed(line, f"not JSON ({exc})")
    if not isinstance(obj, dict):
        return None, None, _malformed(line, "not a JSON object")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return None, None, _malformed(line, "no custom_id")
    return obj, cid, None


def parse_openai_line(line: str) -> ResultRow | None:
    """One line of an OpenAI batch output or error file (``BatchRequestOutput``)."""
    obj, cid, bad = _load(line)
    if obj is None or cid is None:
        return bad
    response = obj.get("response")
    error = obj.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    status = status if isinstance(status, int) else None
    if isinstance(error, dict) and error:
        code, msg = error.get("code"), error.get("message")
        return ResultRow(
            custom_id=cid,
            ok=False,
            error_class=classify_row_error(code, msg, status),
            error_message=f"{code}: {msg}",
            raw=line[:RAW_CAP],
        )
    if not isinstance(response, dict):
        return _malformed(line, "neither response nor error") or ResultRow(
            custom_id=cid, ok=False, error_class=ErrorClass.MALFORMED, raw=line[:RAW_CAP]
        )
    body = response.get("body")
    if status is None or status >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        code = err.get("code") or err.get("type")
        msg = err.get("message")
        return ResultRow(
            custom_id=cid,
            ok=False,
            error_class=classify_row_error(code, msg, status),
            error_message=f"HTTP {status} {code}: {msg}",
            raw=line[:RAW_CAP],
        )
    if not isinstance(body, dict):
        return ResultRow(
            custom_id=cid,
            ok=False,
            error_class=ErrorClass.MALFORMED,
            error_message="response without a body",
            raw=line[:RAW_CAP],
        )
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    tokens_in, tokens_out = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    choices = body.get("choices")
    message = (
        choices[0].get("message")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict)
        else None
    )
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        return ResultRow(
            custom_id=cid,
            ok=False,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            error_class=ErrorClass.PARSE,
            error_message=f"no text content (refusal: {refusal!r})",
            raw=line[:RAW_CAP],
        )
    return ResultRow(
        custom_id=cid,
        ok=True,
        output_text=content,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
    )


def message_text(content: Any) -> str | None:
    """Concatenated text blocks of an Anthropic ``Message.content`` (``None`` if no text)."""
    if not isinstance(content, list):
        return None
    texts = [
        b["text"]
        for b in content
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    ]
    return "".join(texts) if texts else None


def parse_anthropic_line(line: str) -> ResultRow | None:
    """One line of Anthropic batch results (``MessageBatchIndividualResponse``)."""
    obj, cid, bad = _load(line)
    if obj is None or cid is None:
        return bad
    result = obj.get("result")
    rtype = result.get("type") if isinstance(result, dict) else None
    assert cid is not None
    if rtype == "succeeded" and isinstance(result, dict):
        message = result.get("message")
        message = message if isinstance(message, dict) else {}
        usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        tokens_in, tokens_out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        text = message_text(message.get("content"))
        if text is None:
            return ResultRow(
                custom_id=cid,
                ok=False,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                error_class=ErrorClass.PARSE,
                error_message=f"no text content (stop_reason {message.get('stop_reason')!r})",
                raw=line[:RAW_CAP],
            )
        return ResultRow(
            custom_id=cid,
            ok=True,
            output_text=text,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )
    if rtype == "errored" and isinstance(result, dict):
        envelope = result.get("error")
        inner = envelope.get("error") if isinstance(envelope, dict) else None
        inner = (
            inner if isinstance(inner, dict) else (envelope if isinstance(envelope, dict) else {})
        )
        etype, msg = inner.get("type"), inner.get("message")
        return ResultRow(
            custom_id=cid,
            ok=False,
            error_class=classify_row_error(etype, msg, None),
            error_message=f"{etype}: {msg}",
            raw=line[:RAW_CAP],
        )
    if rtype in {"canceled", "expired"}:
        # The batch ended before this request ran. BATCH (retryable): when the engine itself
        # canceled (operator), it knows and does not retry; a provider-side cancel/expiry should.
        return ResultRow(
            custom_id=cid,
            ok=False,
            error_class=ErrorClass.BATCH,
            error_message=f"request {rtype}",
            raw=line[:RAW_CAP],
        )
    return ResultRow(
        custom_id=cid,
        ok=False,
        error_class=ErrorClass.MALFORMED,
        error_message=f"unknown result type {rtype!r}",
        raw=line[:RAW_CAP],
    )


def iter_rows(
    lines: Iterable[str],
    parse: Callable[[str], ResultRow | None],
    stats: StreamStats,
    seen: set[str],
) -> Iterator[ResultRow]:
    """Parse lines into rows, updating ``stats``; first row per custom_id wins.

    Duplicates are dropped here (not just counted) because the engine applies rows in bulk
    upserts, and one statement must not touch the same request row twice.
    """
    for line in lines:
        if not line or line.isspace():
            continue
        stats.lines += 1
        row = parse(line)
        if row is None:
            stats.unrecoverable += 1
            continue
        if row.custom_id in seen:
            stats.duplicates += 1
            continue
        seen.add(row.custom_id)
        stats.rows += 1
        if row.ok:
            stats.ok += 1
        elif row.error_class is ErrorClass.MALFORMED:
            stats.malformed += 1
        else:
            stats.errors += 1
        yield row
