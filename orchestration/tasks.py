"""Celery tasks: thin wrappers (ids in, one service call). See ARCHITECTURE.md section 3.

Delivery semantics: every task here is idempotent (claims by conditional UPDATE, leases,
unique constraints), so all use ``acks_late`` with ``reject_on_worker_lost``: a task whose
worker is killed is redelivered instead of silently acked (PROOF.md F1/F3). The tick
re-derives anything a lost message left behind, so no task retries itself on errors.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from judge_project.logging import correlate

logger = logging.getLogger(__name__)

IDEMPOTENT: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(name="orchestration.tick", ignore_result=True, **IDEMPOTENT)
def tick() -> dict[str, Any]:
    from orchestration.transport.services.tick import tick_run

    report = tick_run()
    return {"ran": report.ran, "seconds": round(report.seconds, 3), "errors": report.errors}


@shared_task(name="orchestration.batch_submit", bind=True, ignore_result=True, **IDEMPOTENT)
def batch_submit(self: Any, *, batch_id: int) -> str:
    from orchestration.transport.services.batches import batch_submit as service

    with correlate(batch_id=batch_id, task_id=self.request.id):
        return service(batch_id=batch_id)


@shared_task(name="orchestration.batch_poll", bind=True, ignore_result=True, **IDEMPOTENT)
def batch_poll(self: Any, *, batch_id: int, lease_owner: str) -> str:
    from orchestration.transport.services.batches import batch_poll as service

    with correlate(batch_id=batch_id, task_id=self.request.id):
        return service(batch_id=batch_id, lease_owner=lease_owner)


@shared_task(name="orchestration.batch_finalize", bind=True, ignore_result=True, **IDEMPOTENT)
def batch_finalize(self: Any, *, batch_id: int, lease_owner: str) -> str:
    from orchestration.transport.services.batches import batch_finalize as service

    with correlate(batch_id=batch_id, task_id=self.request.id):
        return service(batch_id=batch_id, lease_owner=lease_owner)


@shared_task(name="orchestration.batch_cancel", bind=True, ignore_result=True, **IDEMPOTENT)
def batch_cancel(self: Any, *, batch_id: int) -> str:
    from orchestration.transport.services.batches import batch_cancel as service

    with correlate(batch_id=batch_id, task_id=self.request.id):
        return service(batch_id=batch_id)


@shared_task(name="orchestration.direct_calls", bind=True, ignore_result=True, **IDEMPOTENT)
def direct_calls(self: Any, *, provider: str, model: str) -> dict[str, int]:
    from orchestration.transport.services.direct import direct_run

    with correlate(task_id=self.request.id):
        report = direct_run(provider=provider, model=model)
    return {"calls": report.calls, "succeeded": report.succeeded, "failed": report.failed}


@shared_task(name="orchestration.run_advance", bind=True, ignore_result=True, **IDEMPOTENT)
def run_advance(self: Any, *, run_id: int) -> str:
    from orchestration.services.advance import run_advance as service

    with correlate(run_id=run_id, task_id=self.request.id):
        return service(run_id=run_id)
