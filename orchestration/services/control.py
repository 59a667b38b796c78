"""Operator control: pause, resume, cancel (same meaning for batch and direct stages).

* **pause**: no new submissions (a transport hold on ``run:<id>``); batches and calls already
  in flight finish and are applied, so nothing paid for is thrown away.
* **resume**: lift the hold, optionally set a new ``pause_after``, advance.
* **cancel**: terminal. Pending attempts become ``canceled`` (explained rows, never deleted);
  in-flight attempts are marked ``canceled`` so late results are ignored; provider batches
  whose every member is canceled are canceled at the provider.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from orchestration.models import (
    STAGE_ORDER,
    BatchStatus,
    LlmBatch,
    LlmRequest,
    RequestStatus,
    Run,
    RunEvent,
    RunStatus,
    TransportHold,
)
from orchestration.services.errors import InvalidState, NotFound


def run_resolve(*, ref: str | int) -> Run:
    """A run by id, or the latest run of an experiment tag."""
    text = str(ref)
    if text.isdigit():
        run = Run.objects.select_related("experiment", "run_config").filter(pk=int(text)).first()
    else:
        run = (
            Run.objects.select_related("experiment", "run_config")
            .filter(experiment__tag=text)
            .order_by("-pk")
            .first()
        )
    if run is None:
        raise NotFound(
            f"no run found for {text!r}",
            fix="pass a run id or an experiment tag that has been started",
        )
    return run


def _locked(run_id: int) -> Run:
    return Run.objects.select_for_update().get(pk=run_id)


def _event(run: Run, event_type: str, payload: dict[str, object]) -> None:
    RunEvent.objects.create(
        process=run.process, stage=run.current_stage, event_type=event_type, payload=payload
    )


def run_pause(*, run_id: int) -> Run:
    with transaction.atomic():
        run = _locked(run_id)
        if run.status == RunStatus.PAUSED:
            return run
        if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.BLOCKED):
            raise InvalidState(
                f"run {run_id} is {run.status}; only queued or running runs can be paused",
                fix="nothing to pause",
            )
        TransportHold.objects.get_or_create(process=run.process, defaults={"reason": "paused"})
        run.status = RunStatus.PAUSED
        run.save(update_fields=["status", "updated_at"])
        _event(run, "run_paused", {"reason": "operator"})
    return run


def run_resume(*, run_id: int, pause_after: str | None = None, clear: bool = False) -> Run:
    """Resume a paused run. ``pause_after`` sets a new stop stage; ``clear`` removes it."""
    if pause_after is not None and pause_after not in STAGE_ORDER:
        raise InvalidState(
            f"unknown stage {pause_after!r}", fix=f"use one of {', '.join(STAGE_ORDER)}"
        )
    with transaction.atomic():
        run = _locked(run_id)
        if run.status not in (RunStatus.PAUSED, RunStatus.BLOCKED):
            raise InvalidState(
                f"run {run_id} is {run.status}, not paused or blocked",
                fix="only paused or blocked runs resume",
            )
        if pause_after is not None:
            if STAGE_ORDER.index(pause_after) < STAGE_ORDER.index(run.current_stage):
                raise InvalidState(
                    f"pause_after {pause_after} is before the current stage {run.current_stage}",
                    fix="choose the current or a later stage",
                )
            run.pause_after = pause_after
        elif clear or run.pause_after == run.current_stage:
            # Paused *at* this boundary: resuming means going past it.
            run.pause_after = None
        if run.pause_after == run.current_stage and _stage_settled(run):
            run.pause_after = None
        run.status = RunStatus.RUNNING
        run.save(update_fields=["status", "pause_after", "updated_at"])
        TransportHold.objects.filter(process=run.process).delete()
        _event(run, "run_resumed", {"pause_after": run.pause_after})
        from orchestration import tasks

        transaction.on_commit(lambda: tasks.run_advance.delay(run_id=run_id))
    return run


def _stage_settled(run: Run) -> bool:
    return not LlmRequest.objects.filter(
        process=run.process,
        stage=run.current_stage,
        status__in=[RequestStatus.PENDING, RequestStatus.IN_FLIGHT],
    ).exists()


def run_cancel(*, run_id: int, reason: str = "canceled by operator") -> Run:
    with transaction.atomic():
        run = _locked(run_id)
        if run.status == RunStatus.CANCELED:
            return run
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED):
            raise InvalidState(f"run {run_id} is already {run.status}", fix="nothing to cancel")
        now = timezone.now()
        TransportHold.objects.update_or_create(process=run.process, defaults={"reason": "canceled"})
        canceled = LlmRequest.objects.filter(
            process=run.process, status__in=[RequestStatus.PENDING, RequestStatus.IN_FLIGHT]
        ).update(
            status=RequestStatus.CANCELED,
            error_class="canceled",
            error_message=reason,
            completed_at=now,
        )
        run.status = RunStatus.CANCELED
        run.completed_at = now
        run.last_error = reason
        run.save(update_fields=["status", "completed_at", "last_error", "updated_at"])
        _event(run, "run_canceled", {"requests_canceled": canceled, "reason": reason})
        # Batches with nothing left in flight for anyone: cancel at the provider.
        # Shards never sent (queued) have nothing at the provider: close them here. A shard
        # mid-submit is closed by batch_submit, which finds no member left in flight.
        LlmBatch.objects.filter(status=BatchStatus.QUEUED, requests__process=run.process).exclude(
            Exists(
                LlmRequest.objects.filter(batch_id=OuterRef("pk"), status=RequestStatus.IN_FLIGHT)
            )
        ).update(status=BatchStatus.CANCELED, completed_at=now, last_error=reason)
        doomed = list(
            LlmBatch.objects.filter(
                status=BatchStatus.RUNNING,
                requests__process=run.process,
            )
            .exclude(
                Exists(
                    LlmRequest.objects.filter(
                        batch_id=OuterRef("pk"), status=RequestStatus.IN_FLIGHT
                    )
                )
            )
            .values_list("pk", flat=True)
            .distinct()
        )
        from orchestration import tasks

        for bid in doomed:
            transaction.on_commit(partial(tasks.batch_cancel.delay, batch_id=bid))
    return run
