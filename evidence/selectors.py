"""Reads for operators and for ``window_advance``: per-stage progress of one window run.

Counters are *derived*, never stored (DOMAIN.md 7: the original's persisted counters drifted):
evidence rows say what completed (``lN`` is set), request rows say what is pending or in
flight, and everything else eligible is failed (its key exhausted its attempts). One SQL
statement reads both, so the numbers come from a single snapshot: two statements could see a
result applied in between (evidence not yet counted, request no longer pending) and report a
spurious failure, which ``window_advance`` would act on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection

from evidence.models import TRANSFORM_STAGES, EvidenceView, WindowRun

VIEW_ORDER: tuple[str, ...] = tuple(v.value for v in EvidenceView)
TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled"})


def stages_through(target_stage: str) -> list[str]:
    """The transform stages a run with ``target_stage`` performs, in order."""
    last = VIEW_ORDER.index(target_stage)
    return [s.value for s in TRANSFORM_STAGES if VIEW_ORDER.index(s.value) <= last]


@dataclass
class WindowStageProgress:
    stage: str
    total: int  # eligible: evidence whose previous level exists
    completed: int = 0
    failed: int = 0
    pending: int = 0
    in_flight: int = 0
    queued: int = 0
    skipped: int = 0  # evidence that failed upstream (never eligible here)
    retries: int = 0  # attempt rows beyond the first
    failed_attempts: int = 0
    materialized: bool = False
    status: str = "waiting"  # waiting | running | settled

    @property
    def settled(self) -> bool:
        return self.materialized and self.pending == 0


@dataclass
class WindowProgress:
    window_run_id: int
    window: str
    status: str
    current_stage: str
    target_stage: str
    query: str
    country: str
    start_date: str
    end_date: str
    model: str
    evidence_count: int = 0
    search_count: int = 0
    dropped_count: int = 0
    truncated_count: int = 0
    stages: list[WindowStageProgress] = field(default_factory=list)
    in_flight_total: int = 0
    created_at: datetime | None = None
    collected_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    last_error: str = ""

    def stage(self, name: str) -> WindowStageProgress:
        return next(s for s in self.stages if s.stage == name)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "collected_at", "started_at", "completed_at"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        data["terminal"] = self.terminal
        data["has_failures"] = any(s.failed for s in self.stages)
        data["completed_count"] = self.stages[-1].completed if self.stages else 0
        return data


def _counts(run: WindowRun) -> tuple[list[int], dict[tuple[str, str, bool], int]]:
    sql = (
        "SELECT 'e', '', '', false, count(*), "
        "COALESCE(SUM(CASE WHEN l1_cleaned IS NOT NULL THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN l2_neutralized IS NOT NULL THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN l3_abstracted IS NOT NULL THEN 1 ELSE 0 END), 0) "
        "FROM evidence_evidence WHERE window_run_id = %s "
        "UNION ALL "
        "SELECT 'r', stage, status, attempt_index > 1, count(*), 0, 0, 0 "
        "FROM orchestration_llmrequest WHERE process = %s "
        "GROUP BY stage, status, attempt_index > 1"
    )
    levels = [0, 0, 0, 0]
    requests: dict[tuple[str, str, bool], int] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [run.pk, run.process])
        for kind, stage, status, retry, n, n1, n2, n3 in cursor.fetchall():
            if kind == "e":
                levels = [int(n), int(n1), int(n2), int(n3)]
            else:
                requests[(str(stage), str(status), bool(retry))] = int(n)
    return levels, requests


def window_progress(*, run: WindowRun) -> WindowProgress:
    """Per-stage total/completed/failed/pending for one window run, from one snapshot."""
    window = run.window
    levels, requests = _counts(run)
    progress = WindowProgress(
        window_run_id=run.pk,
        window=window.tag,
        status=run.status,
        current_stage=run.current_stage,
        target_stage=run.target_stage,
        query=window.query,
        country=window.country,
        start_date=str(window.start_date),
        end_date=str(window.end_date),
        model=window.model,
        evidence_count=levels[0],
        search_count=run.search_count,
        dropped_count=run.dropped_count,
        truncated_count=run.truncated_count,
        created_at=run.created_at,
        collected_at=run.collected_at,
        started_at=run.started_at,
        completed_at=run.completed_at,
        last_error=run.last_error,
    )
    materialized = set(run.materialized_stages or [])
    for stage in stages_through(run.target_stage):
        level = VIEW_ORDER.index(stage)
        sp = WindowStageProgress(
            stage=stage,
            total=levels[level - 1],
            completed=levels[level],
            materialized=stage in materialized,
        )
        for (rstage, status, retry), n in requests.items():
            if rstage != stage:
                continue
            if status == "pending":
                sp.queued += n
            elif status == "in_flight":
                sp.in_flight += n
            elif status == "failed":
                sp.failed_attempts += n
            if retry:
                sp.retries += n
        sp.pending = sp.queued + sp.in_flight
        if sp.materialized:
            sp.failed = max(sp.total - sp.completed - sp.pending, 0)
            sp.skipped = max(levels[0] - sp.total, 0)
            sp.status = "settled" if sp.pending == 0 else "running"
        progress.stages.append(sp)
    progress.in_flight_total = sum(
        n for (_, status, _), n in requests.items() if status in ("pending", "in_flight")
    )
    return progress
