"""Wire shapes of both providers, built as plain dicts (and read back from request bodies).

Kept in one place so the conformance tests (OpenAPI subset for OpenAI, the SDK's own pydantic
types for Anthropic) pin every shape the simulator emits. OpenAI objects *omit* unset optional
fields instead of sending ``null``: the OpenAPI subset types them as plain strings/integers,
and the SDK models default them to ``None`` either way.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson


def estimate_tokens(text: str) -> int:
    """The usual rough estimate (characters / 4), never zero for non-empty text."""
    return (len(text) + 3) // 4


def _content_text(content: Any) -> str:
    """Text of a message ``content`` that is a string or a list of text parts/blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def openai_prompt(messages: list[Any]) -> tuple[str | None, str]:
    """(system, user) from chat ``messages``: system/developer turns vs everything else."""
    system: list[str] = []
    user: list[str] = []
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        text = _content_text(msg.get("content"))
        if msg.get("role") in {"system", "developer"}:
            system.append(text)
        else:
            user.append(text)
    return ("\n".join(system) if system else None), "\n".join(user)


def anthropic_prompt(system: Any, messages: list[Any]) -> tuple[str | None, str]:
    """(system, user) from Messages API ``system`` and ``messages``."""
    sys_text = _content_text(system) if system is not None else None
    user = "\n".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))
    return (sys_text or None), user


def prompt_hash(model: str, system: str | None, user: str) -> str:
    """Seed for direct calls (no custom_id on the wire): a hash of what was asked."""
    raw = orjson.dumps({"m": model, "s": system, "u": user})
    return "h" + hashlib.sha256(raw).hexdigest()[:24]


def cap_output(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut ``text`` to ``max_tokens`` (estimated) like a real model would stop early."""
    if max_tokens is None or max_tokens <= 0 or estimate_tokens(text) <= max_tokens:
        return text, False
    return text[: max_tokens * 4], True


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


# --- OpenAI ---------------------------------------------------------------------------------


def openai_error(
    message: str, type_: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """``ErrorResponse``: ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def chat_completion(
    *,
    completion_id: str,
    model: str,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    truncated: bool,
    created: int,
) -> dict[str, Any]:
    """``CreateChatCompletionResponse`` with one choice."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "length" if truncated else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "service_tier": "default",
        "system_fingerprint": "fp_simulator",
    }


def openai_file(
    *, file_id: str, filename: str, purpose: str, size: int, created_at: int
) -> dict[str, Any]:
    """``OpenAIFile``."""
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created_at,
        "expires_at": created_at + 30 * 86400,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }


# --- Anthropic ------------------------------------------------------------------------------


def anthropic_error(type_: str, message: str, request_id: str) -> dict[str, Any]:
    """The Messages API error envelope (``ErrorResponse``)."""
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}


def anthropic_message(
    *,
    message_id: str,
    model: str,
    text: str,
    input_tokens: int,
    output_tokens: int,
    truncated: bool,
) -> dict[str, Any]:
    """``Message`` with one text block."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
