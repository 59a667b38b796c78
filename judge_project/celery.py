"""The Celery application (ARCHITECTURE.md sections 2-3).

Queues:
* ``control``: the tick and stage advance. Short, frequent, must never wait behind I/O.
* ``provider_io``: provider calls (batch submit/poll, direct calls). Slow, network bound.
* ``apply``: finalization of completed batches (stream results, parse, write artifacts).

Task names are explicit and stable (``orchestration.tick``) so a module move never strands a
queued message. The tick is registered here in code and synced into django-celery-beat's
tables by the DatabaseScheduler; there is never one periodic task per run or batch.
"""

from __future__ import annotations

import enum
import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "judge_project.settings")


class Queue(enum.StrEnum):
    CONTROL = "control"
    PROVIDER_IO = "provider_io"
    APPLY = "apply"


ALL_QUEUES = ",".join(q.value for q in Queue)

app = Celery("judge_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.task_default_queue = Queue.CONTROL.value
app.conf.task_routes = {
    "orchestration.tick": {"queue": Queue.CONTROL.value},
    "orchestration.run_advance": {"queue": Queue.CONTROL.value},
    "orchestration.window_advance": {"queue": Queue.CONTROL.value},
    "orchestration.batch_submit": {"queue": Queue.PROVIDER_IO.value},
    "orchestration.batch_poll": {"queue": Queue.PROVIDER_IO.value},
    "orchestration.direct_calls": {"queue": Queue.PROVIDER_IO.value},
    "orchestration.batch_finalize": {"queue": Queue.APPLY.value},
    "orchestration.batch_cancel": {"queue": Queue.PROVIDER_IO.value},
    "evidence.window_advance": {"queue": Queue.CONTROL.value},
    "evidence.window_collect": {"queue": Queue.PROVIDER_IO.value},
    "evidence.*": {"queue": Queue.PROVIDER_IO.value},
}


def _tick_seconds() -> int:
    from django.conf import settings

    return int(settings.JUDGE_TICK_SECONDS)


app.conf.beat_schedule = {
    # The single periodic driver. An expiry of one interval means a tick that waited in the
    # queue that long is dropped instead of piling up behind a slow worker. The
    # DatabaseScheduler persists only ``expire_seconds`` (it drops ``expires``), so both are
    # given: ``expires`` for the default scheduler, ``expire_seconds`` for django-celery-beat.
    "judge-gym-tick": {
        "task": "orchestration.tick",
        "schedule": float(_tick_seconds()),
        "options": {
            "expires": float(_tick_seconds()),
            "expire_seconds": _tick_seconds(),
            "queue": Queue.CONTROL.value,
        },
    },
}


@worker_process_init.connect
def _preload(**_kwargs: Any) -> None:
    """Import the heavy modules (both provider SDKs, the transport) when a child starts.

    Otherwise the first task of every fresh child pays several seconds of imports, which is
    a stage-advance and first-provider-call latency an operator would see as a stall.
    """
    import orchestration.transport.services.batches
    import orchestration.transport.services.direct
    import orchestration.transport.services.tick  # noqa: F401
    from orchestration.transport.providers import warm_clients

    warm_clients()  # TLS contexts and HTTP pools: ~0.3 CPU-s per child, paid before any task


@task_prerun.connect
@task_postrun.connect
def _db_hygiene(sender: Any = None, **_kwargs: Any) -> None:
    """Around each task, what Django does around a request: ``close_old_connections()``.

    It drops a connection that is past CONN_MAX_AGE, left in a broken state, or (with
    CONN_HEALTH_CHECKS) fails its check on first use, and keeps a healthy one for the next
    task. Celery's own fixup would close every connection instead (settings.py
    ``CELERY_DB_REUSE_MAX``). Eager tasks run inside the caller's transaction: left alone.
    """
    request = getattr(sender, "request", None)
    if getattr(request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@setup_logging.connect
def _configure_logging(**_kwargs: Any) -> None:
    """Apply Django's LOGGING to workers and beat (Celery would otherwise hijack the root)."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
