"""Celery tasks: thin wrappers (ids in, one service call). See ARCHITECTURE.md section 3.

Delivery semantics: every task here is idempotent (claims by conditional UPDATE, leases,
unique constraints), so all use ``acks_late`` with ``reject_on_worker_lost``: a task whose
worker is killed is redelivered instead of silently acked (PROOF.md F1/F3). The tick
re-derives anything a lost message left behind, so no task retries itself on errors.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Task, shared_task

from judge_project.logging import correlate

logger = logging.getLogger(__name__)

IDEMPOTENT: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}


def _task_owner(kind: str, task_id: str) -> str:
    """``<kind>:<host>:<pid>:<task id>``: the leases.new_owner shape (host and pid say who
    holds it), ending in the task id so a cancellation, handled in the worker's main process
    (another pid), can find exactly that task's claim by its suffix."""
    return f"{kind}:{socket.gethostname()[:30]}:{os.getpid()}:{task_id}"


def submit_owner(task_id: str) -> str:
    """The lease owner a ``batch_submit`` task claims with (see ``_task_owner``)."""
    return _task_owner("submit", task_id)


def direct_owner(task_id: str) -> str:
    """The lease owner of a ``direct_calls`` runner task (see ``_task_owner``)."""
    return _task_owner("direct", task_id)


class BatchTask(Task):  # type: ignore[misc,type-arg]
    """Base of the provider tasks: a task the worker terminates releases its leases.

    Celery calls ``on_retry`` in the worker's main process with "cancelled by Celery" when
    it terminates a running task (``worker_cancel_long_running_tasks_on_connection_loss``);
    nothing else in this module retries, so that is the only way here.
    """

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: dict[str, Any], einfo: Any
    ) -> None:
        if "cancelled by Celery" not in str(exc):
            return
        from orchestration.transport.services.batches import (
            CANCELED_TASK_GRACE_S,
            batch_task_canceled,
        )
        from orchestration.transport.services.direct import direct_task_canceled

        try:
            if self.name == "orchestration.direct_calls":
                direct_task_canceled(
                    owner_suffix=f":{task_id}",
                    provider=kwargs["provider"],
                    model=kwargs["model"],
                    grace_s=CANCELED_TASK_GRACE_S,
                )
            elif "batch_id" in kwargs:
                batch_task_canceled(
                    task=self.name,
                    batch_id=kwargs["batch_id"],
                    lease_owner=kwargs.get("lease_owner"),
                    owner_suffix=f":{task_id}",
                )
        except Exception:  # the database may be what went away; the lease then just runs out
            logger.exception("could not release the lease of canceled task %s", task_id)


@shared_task(name="orchestration.tick", ignore_result=True, **IDEMPOTENT)
def tick() -> dict[str, Any]:
    from orchestration.transport.services.tick import tick_run

    report = tick_run()
    return {"ran": report.ran, "seconds": round(report.seconds, 3), "errors": report.errors}


@shared_task(
    name="orchestration.batch_submit", bind=True, base=BatchTask, ignore_result=True, **IDEMPOTENT
)
def batch_submit(self: Any, *, batch_id: int) -> str:
    from orchestration.transport.services.batches import batch_submit as service

    with correlate(batch_id=batch_id, task_id=self.request.id):
        return service(batch_id=batch_id, owner=submit_owner(self.request.id))


@shared_task(
    name="orchestration.batch_poll", bind=True, base=BatchTask, ignore_result=True, **IDEMPOTENT
)
def batch_poll(self: Any, *, batch_id: int, lease_owner: str) -> str:
    from orchestration.transport.services.batches import batch_poll as service

    with correlate(batch_id=batch_id, task_id=self.request.id):
        return service(batch_id=batch_id, lease_owner=lease_owner)


@shared_task(
    name="orchestration.batch_finalize", bind=True, base=BatchTask, ignore_result=True, **IDEMPOTENT
)
def batch_finalize(self: Any, *, batch_id: int, lease_owner: str) -> str:
    from orchestration.transport.services.batches import batch_finalize as service

    with correlate(batch_id=batch_id, task_id=self.request.id):
        return service(batch_id=batch_id, lease_owner=lease_owner)


@shared_task(name="orchestration.batch_cancel", bind=True, ignore_result=True, **IDEMPOTENT)
def batch_cancel(self: Any, *, batch_id: int) -> str:
    from orchestration.transport.services.batches import batch_cancel as service

    with correlate(batch_id=batch_id, task_id=self.request.id):
        return service(batch_id=batch_id)


@shared_task(
    name="orchestration.direct_calls", bind=True, base=BatchTask, ignore_result=True, **IDEMPOTENT
)
def direct_calls(self: Any, *, provider: str, model: str) -> dict[str, int]:
    from orchestration.transport.services.direct import direct_run

    with correlate(task_id=self.request.id):
        report = direct_run(provider=provider, model=model, owner=direct_owner(self.request.id))
    return {"calls": report.calls, "succeeded": report.succeeded, "failed": report.failed}


@shared_task(name="orchestration.run_advance", bind=True, ignore_result=True, **IDEMPOTENT)
def run_advance(self: Any, *, run_id: int) -> str:
    from orchestration.services.advance import run_advance as service

    with correlate(run_id=run_id, task_id=self.request.id):
        return service(run_id=run_id)
