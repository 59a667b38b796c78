"""Provider adapters (OpenAI, Anthropic) behind one interface, and the factory the tick uses.

``get_adapter(provider)`` builds the official SDK client from settings:

- base URL: ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``, or, when ``JUDGE_SIMULATOR_URL`` is
  set, the simulator's layout ``<sim>/openai/v1`` and ``<sim>/anthropic`` (the Anthropic SDK
  appends ``/v1/...`` itself);
- API key from settings (in simulator mode a dummy key when unset);
- timeout ``JUDGE_PROVIDER_TIMEOUT_S`` (connect capped at 10 s);
- ``max_retries=0``: the engine owns retries and classifies every error itself.

One SDK client per process and provider is cached so httpx2 connection pooling works across
tasks; the cache is keyed by pid (Celery prefork children must not share a parent's sockets)
and by the settings used, so ``override_settings`` in tests gets a fresh client.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import anthropic
import httpx2
import openai

from orchestration.transport.providers.anthropic_adapter import AnthropicAdapter
from orchestration.transport.providers.base import (
    BatchInfo,
    BatchState,
    ChatRequest,
    ErrorClass,
    ProviderAdapter,
    ProviderError,
    ResultRow,
    StreamStats,
    provider_custom_id,
    request_pk_from_custom_id,
)
from orchestration.transport.providers.errors import classify_exception, classify_row_error
from orchestration.transport.providers.openai_adapter import OpenAIAdapter

__all__ = [
    "PROVIDERS",
    "AnthropicAdapter",
    "BatchInfo",
    "BatchState",
    "ChatRequest",
    "ErrorClass",
    "OpenAIAdapter",
    "ProviderAdapter",
    "ProviderError",
    "ResultRow",
    "StreamStats",
    "classify_exception",
    "classify_row_error",
    "get_adapter",
    "provider_custom_id",
    "request_pk_from_custom_id",
    "reset_clients",
    "warm_clients",
]

PROVIDERS = ("openai", "anthropic")
SIMULATOR_KEY = "sk-simulator"

# Per process: enough for a worker's direct-call concurrency plus polling/downloads.
CONNECTION_LIMITS = httpx2.Limits(
    max_connections=64, max_keepalive_connections=32, keepalive_expiry=30.0
)

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}


def _settings() -> Any:
    from django.conf import settings

    return settings


def _endpoint(provider: str) -> tuple[str | None, str]:
    """(base_url or None for the SDK default, api_key)."""
    s = _settings()
    sim = (getattr(s, "JUDGE_SIMULATOR_URL", None) or "").rstrip("/")
    if provider == "openai":
        key = getattr(s, "OPENAI_API_KEY", None)
        base = f"{sim}/openai/v1" if sim else getattr(s, "OPENAI_BASE_URL", None)
        env = "OPENAI_API_KEY"
    elif provider == "anthropic":
        key = getattr(s, "ANTHROPIC_API_KEY", None)
        base = f"{sim}/anthropic" if sim else getattr(s, "ANTHROPIC_BASE_URL", None)
        env = "ANTHROPIC_API_KEY"
    else:
        raise ProviderError(ErrorClass.PERMANENT, f"unknown provider {provider!r}")
    if not key:
        if not sim:
            raise ProviderError(ErrorClass.PERMANENT, f"{env} is not set")
        key = SIMULATOR_KEY
    return (base or None), str(key)


def _timeout() -> httpx2.Timeout:
    seconds = float(getattr(_settings(), "JUDGE_PROVIDER_TIMEOUT_S", 120.0))
    return httpx2.Timeout(seconds, connect=min(10.0, seconds))


def _client(provider: str) -> Any:
    base_url, api_key = _endpoint(provider)
    timeout = _timeout()
    cache_key = (provider, os.getpid(), base_url, api_key, timeout.read)
    with _lock:
        client = _clients.get(cache_key)
        if client is not None:
            return client
        # Forget (never close) clients inherited from a parent process: closing could write
        # to sockets the parent still uses.
        for stale in [k for k in _clients if k[1] != cache_key[1]]:
            del _clients[stale]
        if provider == "openai":
            client = openai.OpenAI(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout,
                max_retries=0,
                http_client=openai.DefaultHttpxClient(limits=CONNECTION_LIMITS, timeout=timeout),
            )
        else:
            client = anthropic.Anthropic(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout,
                max_retries=0,
                http_client=anthropic.DefaultHttpxClient(limits=CONNECTION_LIMITS, timeout=timeout),
            )
        _clients[cache_key] = client
        return client


def warm_clients() -> None:
    """Build this process's SDK clients now (worker start) rather than in the first task.

    A client costs a TLS context and an HTTP pool, about 0.3 CPU-s; built lazily, every
    fresh worker child paid it inside its first provider call. A provider without a key is
    skipped: its first call reports the missing key as before.
    """
    for provider in PROVIDERS:
        try:
            _client(provider)
        except ProviderError:
            continue


def get_adapter(provider: str) -> ProviderAdapter:
    """The adapter for ``provider`` (``openai`` | ``anthropic``) with the process's client.

    Adapters are cheap and hold per-call state (``last_stream_stats``): build one per task.
    Raises ``ProviderError(PERMANENT)`` for an unknown provider or a missing API key.
    """
    client = _client(provider)
    if provider == "openai":
        return OpenAIAdapter(client)
    return AnthropicAdapter(client)


def reset_clients() -> None:
    """Close and forget cached clients (tests; after changing provider settings)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        try:
            client.close()
        except Exception:  # noqa: S112 - closing is best effort
            continue
