"""Guarded destructive maintenance. Internal only: no CLI, no admin action, no API.

Why so guarded: run data is the research record. Wiping exists for operators cleaning up test
runs from a Django shell; it refuses active runs unless ``allow_active`` is passed (the
original required the same explicit flag), and deletes in pages so a 10^6-request run never
holds one giant transaction or lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from orchestration.models import (
    ACTIVE_RUN_STATUSES,
    LlmRequest,
    Rubric,
    RubricCritic,
    Run,
    RunEvent,
    Sample,
    Score,
    ScoreCritic,
    ScoreTarget,
    ScoreTargetItem,
    TransportHold,
)
from orchestration.services.control import run_cancel
from orchestration.services.errors import InvalidState, NotFound

PAGE = 5000


@dataclass
class WipeReport:
    run_id: int
    deleted: dict[str, int] = field(default_factory=dict)


def _paged_delete(label: str, qs: object, report: WipeReport) -> None:
    total = 0
    while True:
        ids = list(qs.values_list("pk", flat=True)[:PAGE])  # type: ignore[attr-defined]
        if not ids:
            break
        with transaction.atomic():
            count, _ = qs.model.objects.filter(pk__in=ids).delete()  # type: ignore[attr-defined]
        total += count
    report.deleted[label] = total


def run_wipe(*, run_id: int, allow_active: bool = False) -> WipeReport:
    """Delete one run and everything it produced (attempts, artifacts, targets, ledger).

    The frozen RunConfig is kept (append-only by design). Provider batches shared with other
    runs are kept; this run's attempts are removed from them.
    """
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"run {run_id} does not exist", fix="check the id")
    if run.status in ACTIVE_RUN_STATUSES:
        if not allow_active:
            raise InvalidState(
                f"run {run_id} is {run.status}",
                fix="cancel it first, or pass allow_active=True deliberately",
            )
        run_cancel(run_id=run_id, reason="wiped")
    report = WipeReport(run_id=run_id)
    process = run.process
    _paged_delete("requests", LlmRequest.objects.filter(process=process), report)
    _paged_delete("events", RunEvent.objects.filter(process=process), report)
    for label, model in (
        ("score_critics", ScoreCritic),
        ("scores", Score),
        ("rubric_critics", RubricCritic),
        ("rubrics", Rubric),
    ):
        _paged_delete(label, model.objects.filter(run_id=run_id), report)
    _paged_delete("target_items", ScoreTargetItem.objects.filter(target__run_id=run_id), report)
    _paged_delete("targets", ScoreTarget.objects.filter(run_id=run_id), report)
    _paged_delete("samples", Sample.objects.filter(run_id=run_id), report)
    with transaction.atomic():
        TransportHold.objects.filter(process=process).delete()
        Run.objects.filter(pk=run_id).delete()
    report.deleted["runs"] = 1
    return report
