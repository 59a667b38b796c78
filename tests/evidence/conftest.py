"""Fixtures for the evidence pipeline: simulator over HTTP (search + LLM), eager Celery, drive."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from evidence.models import Window, WindowRun
from evidence.selectors import window_progress
from evidence.services.windows import window_create
from judge_project.celery import app as celery_app
from orchestration.judging.sim_responder import respond as default_respond
from orchestration.simulator.config import Responder, SimulatorConfig
from orchestration.simulator.server import SimulatorHandle, run_in_thread
from orchestration.transport.providers import reset_clients
from orchestration.transport.services.tick import tick_run
from policies.models import Policy
from tests.live import live_procs  # noqa: F401  (fixture: real worker/beat processes)

TERMINAL = ("completed", "failed", "canceled")


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Callable[..., SimulatorHandle]]:
    """Start a simulator (optionally with a custom responder) and point every provider at it."""
    handles: list[SimulatorHandle] = []
    overrides: list[Any] = []

    def start(responder: Responder | None = None) -> SimulatorHandle:
        handle = run_in_thread(
            SimulatorConfig(seed=1, data_dir=tmp_path / f"sim{len(handles)}", responder=responder)
        )
        handles.append(handle)
        reset_clients()
        override = override_settings(
            JUDGE_SIMULATOR_URL=handle.url, FIRECRAWL_API_URL=None, FIRECRAWL_API_KEY=None
        )
        override.enable()
        overrides.append(override)
        return handle

    yield start
    for override in reversed(overrides):
        override.disable()
    reset_clients()
    for handle in handles:
        handle.stop()


@pytest.fixture
def simulator(sim_factory: Callable[..., SimulatorHandle]) -> SimulatorHandle:
    return sim_factory()


@pytest.fixture
def eager_celery() -> Iterator[None]:
    old = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


@pytest.fixture
def fast_retries(db: None) -> Policy:
    """Retries without backoff and 2 attempts, so failure paths finish in seconds."""
    policy = Policy.objects.filter(scope=Policy.Scope.GLOBAL).first() or Policy(
        scope=Policy.Scope.GLOBAL, key=""
    )
    policy.retry_backoff_seconds = 0
    policy.retry_jitter_ratio = 0.0
    policy.max_request_attempts = 2
    policy.poll_interval_seconds = 1
    policy.save()
    return policy


def make_window(tag: str = "w-hu", **overrides: Any) -> Window:
    fields: dict[str, Any] = {
        "tag": tag,
        "query": "fascism",
        "country": "Hungary",
        "start_date": dt.date(2026, 1, 1),
        "end_date": dt.date(2026, 1, 31),
        "model": "gpt-4.1-mini",
        "evidence_limit": 6,
        "target_stage": "l3_abstracted",
    }
    fields.update(overrides)
    return window_create(**fields)


def drive(window_run_id: int, *, timeout: float = 120.0) -> WindowRun:
    """Tick until the window run is terminal (eager Celery runs the dispatched tasks inline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_run()
        run = WindowRun.objects.select_related("window").get(pk=window_run_id)
        if run.status in TERMINAL:
            return run
        time.sleep(0.02)
    run = WindowRun.objects.select_related("window").get(pk=window_run_id)
    raise AssertionError(
        f"window run {window_run_id} did not finish: {window_progress(run=run).to_json()}"
    )


def responder_failing(predicate: Callable[[str, str], str | None]) -> Responder:
    """The default responder, except where ``predicate(task_stage_text, user)`` gives a reply."""

    def respond(*, model: str, system: str | None, user: str, seed: str) -> str:
        override = predicate(system or "", user)
        if override is not None:
            return override
        return default_respond(model=model, system=system, user=user, seed=seed)

    return respond
