"""Celery tasks for the evidence pipeline: thin wrappers (ids in, one service call).

See ARCHITECTURE.md section 3. Both tasks are idempotent (the collect step claims the window
run by a conditional UPDATE on its lease; advance runs under the row lock and reads artifacts),
so both use ``acks_late`` with ``reject_on_worker_lost``: a task whose worker is killed is
redelivered, and the reconciler re-drives anything a lost message left behind. Names are
explicit and stable; routes live in ``judge_project.celery`` (collect does network I/O and goes
to ``provider_io``; advance is short and goes to ``control``).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from judge_project.logging import correlate

IDEMPOTENT: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(name="evidence.window_collect", bind=True, ignore_result=True, **IDEMPOTENT)
def window_collect(self: Any, *, window_run_id: int) -> str:
    from evidence.services.windows import window_run_collect

    with correlate(window_run_id=window_run_id, task_id=self.request.id):
        return window_run_collect(window_run_id=window_run_id)


@shared_task(name="evidence.window_advance", bind=True, ignore_result=True, **IDEMPOTENT)
def window_advance(self: Any, *, window_run_id: int) -> str:
    from evidence.services.advance import window_advance as service

    with correlate(window_run_id=window_run_id, task_id=self.request.id):
        return service(window_run_id=window_run_id)
