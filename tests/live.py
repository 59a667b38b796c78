"""Real processes for tests: Celery worker and beat as subprocesses on the test database.

The children use exactly the operator command lines (orchestration.processes). They talk to
the test database (pytest-django's ``test_<name>``), the Redis broker, and an in-thread
simulator, so these tests exercise serialisation, routing, acks and on_commit for real.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from orchestration.processes import Processes


def flush_broker() -> None:
    """Drop every queued Celery message (as a Redis restart without persistence would)."""
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def live_env(sim_url: str, **extra: str) -> dict[str, str]:
    db = connection.settings_dict
    url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "JUDGE_REDIS_URL": settings.JUDGE_REDIS_URL or "",
        "JUDGE_SIMULATOR_URL": sim_url,
        "JUDGE_TICK_SECONDS": "1",
        "JUDGE_LOG_FORMAT": "text",
        "JUDGE_LOG_LEVEL": "WARNING",
        **extra,
    }


@pytest.fixture
def live_procs(simulator, tmp_path: Path) -> Iterator[Processes]:
    flush_broker()
    procs = Processes(env=live_env(simulator.url), log_dir=tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for(predicate: Callable[[], bool], *, timeout: float, procs: Processes, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for child in procs.children:
            if not child.alive():
                raise AssertionError(f"{child.name} died while waiting for {what}:\n{child.tail()}")
        time.sleep(0.25)
    tails = "\n".join(f"--- {c.name}\n{c.tail(20)}" for c in procs.children)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")
