"""Map provider SDK exceptions and batch-row errors onto :class:`ErrorClass`.

The adapters build their SDK clients with ``max_retries=0``: the engine owns retries (durably,
as new attempt rows with backoff), so every failure must reach it classified. Facts about the
installed SDKs (openai 3.x, anthropic 2.x) that shape this module:

- Both are built on **httpx2** (not httpx). Errors raised while a response *body* is being
  streamed (``files.content`` via ``with_streaming_response``, Anthropic ``results``) are not
  wrapped by the SDK: they surface as raw ``httpx2`` exceptions (e.g. ``RemoteProtocolError``
  "peer closed connection without sending complete message body"). Legacy ``httpx`` classes
  are matched too in case a caller passes an httpx client.
- Failures before a response (connect/read timeouts, resets) become ``APITimeoutError`` /
  ``APIConnectionError``; HTTP >= 400 becomes a status-specific ``APIStatusError`` subclass.
- OpenAI's ``APIStatusError.body`` is the *inner* ``error`` object; Anthropic's is the whole
  envelope ``{"type": "error", "error": {...}}``. Quota markers are searched in both.
- ``Retry-After`` handling mirrors the SDKs' own parser: ``retry-after-ms`` first, then
  ``retry-after`` as seconds or an HTTP date.
"""

from __future__ import annotations

import email.utils
import json
import re
import ssl
import time
from collections.abc import Mapping
from typing import Any

import anthropic
import anyio
import httpx
import httpx2
import openai
import orjson
import pydantic

from orchestration.transport.providers.base import ErrorClass, ProviderError

QUOTA_MARKERS = (
    "insufficient_quota",
    "token_limit_exceeded",
    "enqueued token limit",
    "billing_error",
    "credit balance",
    "exceeded your current quota",
)

_STATUS_ERRORS = (openai.APIStatusError, anthropic.APIStatusError)
_CONNECTION_ERRORS = (openai.APIConnectionError, anthropic.APIConnectionError)
_VALIDATION_ERRORS = (openai.APIResponseValidationError, anthropic.APIResponseValidationError)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httpx2.TimeoutException,
    httpx2.TransportError,  # NetworkError, RemoteProtocolError, ReadError, ...
    httpx.TimeoutException,
    httpx.TransportError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    ssl.SSLError,
    ConnectionError,
    TimeoutError,
)
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    json.JSONDecodeError,
    orjson.JSONDecodeError,
    pydantic.ValidationError,
    httpx2.DecodingError,
    httpx.DecodingError,
    UnicodeDecodeError,
)

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<u>ms|s|m|h)")


def _parse_duration(raw: str) -> float | None:
    """OpenAI ``x-ratelimit-reset-*`` values such as ``1s``, ``20ms``, ``6m0s``."""
    total = 0.0
    matched = False
    for m in _DURATION.finditer(raw):
        matched = True
        n = float(m.group("n"))
        total += {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[m.group("u")]
    return total if matched else None


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait according to the response headers, if they say."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            parsed = email.utils.parsedate_tz(raw)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    resets = [
        _parse_duration(headers.get(h) or "")
        for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
    ]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


def _body_text(body: object) -> str:
    if body is None:
        return ""
    if isinstance(body, str | bytes):
        return body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        return json.dumps(body, default=str)
    except (TypeError, ValueError):
        return str(body)


def mentions_quota(*texts: str | None) -> bool:
    blob = " ".join(t for t in texts if t).lower()
    return any(marker in blob for marker in QUOTA_MARKERS)


def _status_error(exc: Any) -> ProviderError:
    status: int = int(exc.status_code)
    text = _body_text(getattr(exc, "body", None))
    message = f"{exc.message}" if getattr(exc, "message", None) else str(exc)
    headers: Mapping[str, str] | None = None
    response = getattr(exc, "response", None)
    if response is not None:
        headers = response.headers
    retry_after = parse_retry_after(headers)
    detail = f"HTTP {status}: {message}"
    if mentions_quota(text, message) or status == 402:
        return ProviderError(ErrorClass.QUOTA, detail, retry_after=retry_after, status_code=status)
    if status == 429:
        return ProviderError(
            ErrorClass.RATE_LIMIT, detail, retry_after=retry_after, status_code=status
        )
    if status == 408:
        return ProviderError(
            ErrorClass.TIMEOUT, detail, retry_after=retry_after, status_code=status
        )
    if status >= 500 or "overloaded" in text.lower():
        # 500/502/503/504 and Anthropic's 529 overloaded_error: transient by definition.
        return ProviderError(ErrorClass.SERVER, detail, retry_after=retry_after, status_code=status)
    return ProviderError(ErrorClass.PERMANENT, detail, status_code=status)


def classify_exception(exc: BaseException) -> ProviderError:
    """The :class:`ProviderError` for any exception raised while talking to a provider."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, _VALIDATION_ERRORS):
        return ProviderError(
            ErrorClass.MALFORMED,
            f"response did not match the SDK schema: {exc}",
            status_code=getattr(exc, "status_code", None),
        )
    if isinstance(exc, _STATUS_ERRORS):
        return _status_error(exc)
    if isinstance(exc, _CONNECTION_ERRORS):
        # APITimeoutError is a subclass: both mean "no (complete) response", retry later.
        cause = exc.__cause__
        suffix = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return ProviderError(ErrorClass.TIMEOUT, f"{type(exc).__name__}: {exc}{suffix}")
    if isinstance(exc, _DECODE_ERRORS):
        return ProviderError(ErrorClass.MALFORMED, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, _TRANSPORT_ERRORS):
        return ProviderError(ErrorClass.TIMEOUT, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, openai.OpenAIError | anthropic.AnthropicError):
        return ProviderError(ErrorClass.UNKNOWN, f"{type(exc).__name__}: {exc}")
    return ProviderError(ErrorClass.UNKNOWN, f"{type(exc).__name__}: {exc}")


def classify_row_error(
    code: str | None, message: str | None, status_code: int | None
) -> ErrorClass:
    """Class of one failed batch row (OpenAI error-file line, Anthropic ``errored`` result)."""
    code_l = (code or "").lower()
    if mentions_quota(code, message):
        return ErrorClass.QUOTA
    if code_l in {"batch_expired", "batch_cancelled", "batch_canceled", "expired", "canceled"}:
        return ErrorClass.BATCH
    if status_code == 429 or code_l in {"rate_limit_exceeded", "rate_limit_error"}:
        return ErrorClass.RATE_LIMIT
    if status_code == 408 or code_l in {"timeout", "timeout_error", "request_timeout"}:
        return ErrorClass.TIMEOUT
    if (status_code is not None and status_code >= 500) or code_l in {
        "server_error",
        "api_error",
        "overloaded_error",
        "internal_error",
    }:
        return ErrorClass.SERVER
    if (status_code is not None and 400 <= status_code < 500) or code_l in {
        "invalid_request_error",
        "invalid_request",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "context_length_exceeded",
    }:
        return ErrorClass.PERMANENT
    return ErrorClass.UNKNOWN
