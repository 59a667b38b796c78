"""classify_exception / classify_row_error / parse_retry_after on synthetic SDK exceptions."""

from __future__ import annotations

import email.utils
import json
import time

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from orchestration.transport.providers.base import ErrorClass, ProviderError
from orchestration.transport.providers.errors import (
    classify_exception,
    classify_row_error,
    parse_retry_after,
)

REQ = httpx2.Request("POST", "http://127.0.0.1/v1/x")


def _openai(cls, status, body, headers=None):
    resp = httpx2.Response(status, headers=headers or {}, json={"error": body}, request=REQ)
    return cls(f"Error code: {status}", response=resp, body=body)


def _anthropic(cls, status, etype, message="m", headers=None):
    body = {"type": "error", "error": {"type": etype, "message": message}}
    resp = httpx2.Response(status, headers=headers or {}, json=body, request=REQ)
    return cls(f"Error code: {status}", response=resp, body=body)


@pytest.mark.parametrize(
    ("exc", "expected", "retry_after"),
    [
        (
            _openai(
                openai.RateLimitError,
                429,
                {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"},
                {"retry-after-ms": "1500", "retry-after": "2"},
            ),
            ErrorClass.RATE_LIMIT,
            1.5,
        ),
        (
            _openai(
                openai.RateLimitError,
                429,
                {"message": "x", "type": "requests"},
                {"retry-after": "7"},
            ),
            ErrorClass.RATE_LIMIT,
            7.0,
        ),
        (
            _openai(
                openai.RateLimitError,
                429,
                {"message": "x", "type": "tokens"},
                {"x-ratelimit-reset-tokens": "6m0s", "x-ratelimit-reset-requests": "1s"},
            ),
            ErrorClass.RATE_LIMIT,
            360.0,
        ),
        (
            _openai(
                openai.RateLimitError,
                429,
                {
                    "message": "You exceeded your current quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                },
            ),
            ErrorClass.QUOTA,
            None,
        ),
        (
            _openai(
                openai.BadRequestError,
                400,
                {
                    "message": "Enqueued token limit reached for gpt-4o",
                    "type": "invalid_request_error",
                    "code": "token_limit_exceeded",
                },
            ),
            ErrorClass.QUOTA,
            None,
        ),
        (
            _openai(openai.InternalServerError, 500, {"message": "boom", "type": "server_error"}),
            ErrorClass.SERVER,
            None,
        ),
        (
            _openai(
                openai.InternalServerError, 503, {"message": "overloaded", "type": "server_error"}
            ),
            ErrorClass.SERVER,
            None,
        ),
        (
            _openai(
                openai.AuthenticationError,
                401,
                {"message": "bad key", "type": "invalid_request_error"},
            ),
            ErrorClass.PERMANENT,
            None,
        ),
        (
            _openai(openai.PermissionDeniedError, 403, {"message": "no", "type": "x"}),
            ErrorClass.PERMANENT,
            None,
        ),
        (
            _openai(openai.NotFoundError, 404, {"message": "no", "type": "x"}),
            ErrorClass.PERMANENT,
            None,
        ),
        (
            _openai(
                openai.BadRequestError, 400, {"message": "bad", "type": "invalid_request_error"}
            ),
            ErrorClass.PERMANENT,
            None,
        ),
        (
            _openai(openai.UnprocessableEntityError, 422, {"message": "bad", "type": "x"}),
            ErrorClass.PERMANENT,
            None,
        ),
        (
            _anthropic(
                anthropic.RateLimitError, 429, "rate_limit_error", headers={"retry-after": "3"}
            ),
            ErrorClass.RATE_LIMIT,
            3.0,
        ),
        (_anthropic(anthropic.OverloadedError, 529, "overloaded_error"), ErrorClass.SERVER, None),
        (_anthropic(anthropic.InternalServerError, 500, "api_error"), ErrorClass.SERVER, None),
        (
            _anthropic(anthropic.BadRequestError, 400, "invalid_request_error"),
            ErrorClass.PERMANENT,
            None,
        ),
        (
            _anthropic(
                anthropic.BadRequestError,
                400,
                "invalid_request_error",
                "Your credit balance is too low",
            ),
            ErrorClass.QUOTA,
            None,
        ),
        (_anthropic(anthropic.PaymentRequiredError, 402, "billing_error"), ErrorClass.QUOTA, None),
        (
            _anthropic(
                anthropic.RateLimitError,
                429,
                "rate_limit_error",
                "enqueued token limit would be exceeded",
            ),
            ErrorClass.QUOTA,
            None,
        ),
        (_anthropic(anthropic.RequestTimeoutError, 408, "timeout_error"), ErrorClass.TIMEOUT, None),
    ],
)
def test_status_errors(exc, expected, retry_after):
    err = classify_exception(exc)
    assert err.error_class is expected, err.message
    assert err.status_code == exc.status_code
    if retry_after is not None:
        assert err.retry_after == pytest.approx(retry_after)


@pytest.mark.parametrize(
    "exc",
    [
        openai.APITimeoutError(request=REQ),
        openai.APIConnectionError(request=REQ),
        anthropic.APITimeoutError(request=REQ),
        anthropic.APIConnectionError(request=REQ),
        httpx2.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx2.ReadTimeout("read timed out"),
        httpx2.ReadError("reset"),
        httpx2.ConnectError("refused"),
        httpx.RemoteProtocolError("legacy httpx"),
        ConnectionResetError("reset"),
    ],
)
def test_transport_errors_are_timeouts(exc):
    assert classify_exception(exc).error_class is ErrorClass.TIMEOUT


def _orjson_error() -> Exception:
    try:
        orjson.loads(b"{")
    except orjson.JSONDecodeError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "exc", [json.JSONDecodeError("x", "doc", 0), _orjson_error(), httpx2.DecodingError("gzip")]
)
def test_decode_errors_are_malformed(exc):
    assert classify_exception(exc).error_class is ErrorClass.MALFORMED


def test_response_validation_error_is_malformed():
    resp = httpx2.Response(200, json={"weird": True}, request=REQ)
    exc = openai.APIResponseValidationError(response=resp, body={"weird": True})
    assert classify_exception(exc).error_class is ErrorClass.MALFORMED


def test_provider_error_passes_through_and_unknown():
    pe = ProviderError(ErrorClass.SERVER, "x")
    assert classify_exception(pe) is pe
    assert classify_exception(RuntimeError("?")).error_class is ErrorClass.UNKNOWN


def test_parse_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = parse_retry_after({"retry-after": when})
    assert wait is not None
    assert 25 <= wait <= 31
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        ("batch_expired", "x", None, ErrorClass.BATCH),
        ("batch_cancelled", "x", None, ErrorClass.BATCH),
        ("rate_limit_exceeded", "x", 429, ErrorClass.RATE_LIMIT),
        (None, None, 429, ErrorClass.RATE_LIMIT),
        ("rate_limit_error", "x", None, ErrorClass.RATE_LIMIT),
        ("insufficient_quota", "x", 429, ErrorClass.QUOTA),
        ("server_error", "x", 500, ErrorClass.SERVER),
        ("overloaded_error", "Overloaded", None, ErrorClass.SERVER),
        ("api_error", "x", None, ErrorClass.SERVER),
        ("invalid_request_error", "bad", 400, ErrorClass.PERMANENT),
        ("invalid_request_error", "bad", None, ErrorClass.PERMANENT),
        (None, "x", 408, ErrorClass.TIMEOUT),
        ("something_new", "x", None, ErrorClass.UNKNOWN),
    ],
)
def test_classify_row_error(code, message, status, expected):
    assert classify_row_error(code, message, status) is expected
