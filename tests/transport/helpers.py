"""Helpers for transport tests: enqueue ``bench:`` requests and drive ticks until settled."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from orchestration.models import LlmRequest
from orchestration.transport.services.enqueue import RequestSpec, llm_requests_enqueue
from orchestration.transport.services.tick import tick_run

MODELS = {
    "openai": ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
    "anthropic": ("claude-haiku-4.5", "claude-haiku-4-5"),
}


def enqueue_bench(
    n: int,
    *,
    provider: str = "openai",
    route_hint: str = "auto",
    process: str = "bench:1",
    max_attempts: int = 3,
    backoff_s: float = 0.0,
    start: int = 0,
    params: dict[str, Any] | None = None,
) -> int:
    model, provider_model = MODELS[provider]
    specs = [
        RequestSpec(
            custom_key=f"bench:{i}",
            process=process,
            stage="bench",
            provider=provider,
            model=model,
            provider_model=provider_model,
            system_prompt="You are a test.",
            user_prompt=f"request {i}",
            max_output_tokens=64,
            max_attempts=max_attempts,
            route_hint=route_hint,
            params={"backoff_s": backoff_s, "jitter": 0.0, **(params or {})},
        )
        for i in range(start, start + n)
    ]
    return llm_requests_enqueue(specs=specs).inserted


def unsettled() -> int:
    return LlmRequest.objects.filter(status__in=["pending", "in_flight"]).count()


def drive_transport(*, timeout: float = 120.0, pause: float = 0.02) -> int:
    """Tick (eager Celery runs the dispatched tasks inline) until nothing is unsettled."""
    deadline = time.monotonic() + timeout
    ticks = 0
    while time.monotonic() < deadline:
        tick_run()
        ticks += 1
        if unsettled() == 0:
            return ticks
        # Make due anything waiting on a backoff so tests don't sleep through it.
        LlmRequest.objects.filter(status="pending").update(next_attempt_at="2000-01-01T00:00Z")
        time.sleep(pause)
    raise AssertionError(f"transport did not settle: {unsettled()} unsettled")


def sim_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def sim_post(url: str, body: Any) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())
