"""Reads for operators: per-stage progress from indexed aggregates (never stored counters).

Counters are *derived*: artifacts say what completed, request rows say what is pending, and
everything else eligible is failed (exhausted, or blocked by exhausted upstream work). One
SQL statement reads them all, so they come from a single snapshot and cannot disagree with
each other (DOMAIN.md 7: the original's persisted counters drifted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from orchestration.models import STAGE_ORDER, Run

_ARTIFACT_TABLES = {
    "rubric_gen": "orchestration_rubric",
    "rubric_critic": "orchestration_rubriccritic",
    "score_gen": "orchestration_score",
    "score_critic": "orchestration_scorecritic",
}


@dataclass
class StageProgress:
    stage: str
    total: int
    completed: int = 0
    failed: int = 0
    pending: int = 0
    in_flight: int = 0
    queued: int = 0
    retries: int = 0
    failed_attempts: int = 0
    materialized: bool = False
    status: str = "waiting"  # waiting | running | settled

    @property
    def settled(self) -> bool:
        return self.materialized and self.pending == 0


@dataclass
class RunProgress:
    run_id: int
    experiment: str
    status: str
    current_stage: str
    pause_after: str | None
    samples: int
    targets: int
    stages: list[StageProgress] = field(default_factory=list)
    batches_in_flight: int = 0
    spec_signature: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    last_error: str = ""
    eta_seconds: float | None = None

    def stage(self, name: str) -> StageProgress:
        return next(s for s in self.stages if s.stage == name)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "started_at", "completed_at"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        data["terminal"] = self.status in {"completed", "failed", "canceled"}
        data["has_failures"] = any(s.failed for s in self.stages)
        return data


def _counts(run: Run) -> tuple[dict[str, int], dict[tuple[str, str, bool], int]]:
    parts = [
        f"SELECT 'a' AS kind, '{stage}' AS stage, '' AS status, false AS retry, count(*) AS n "
        f"FROM {table} WHERE run_id = %s"
        for stage, table in _ARTIFACT_TABLES.items()
    ]
    parts.append(
        "SELECT 'r', stage, status, attempt_index > 1, count(*) FROM orchestration_llmrequest "
        "WHERE process = %s GROUP BY stage, status, attempt_index > 1"
    )
    sql = " UNION ALL ".join(parts)
    artifacts: dict[str, int] = {}
    requests: dict[tuple[str, str, bool], int] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [run.pk] * len(_ARTIFACT_TABLES) + [run.process])
        for kind, stage, status, retry, n in cursor.fetchall():
            if kind == "a":
                artifacts[stage] = int(n)
            else:
                requests[(stage, status, bool(retry))] = int(n)
    return artifacts, requests


def run_progress(*, run: Run) -> RunProgress:
    """Per-stage total/completed/failed/pending for one run, from one snapshot."""
    artifacts, requests = _counts(run)
    materialized = set(run.materialized_stages or [])
    progress = RunProgress(
        run_id=run.pk,
        experiment=run.experiment.tag,
        status=run.status,
        current_stage=run.current_stage,
        pause_after=run.pause_after,
        samples=run.sample_count,
        targets=run.target_count,
        spec_signature=run.run_config.spec_signature,
        created_at=run.created_at,
        started_at=run.started_at,
        completed_at=run.completed_at,
        last_error=run.last_error,
    )
    for stage in STAGE_ORDER:
        total = run.sample_count if stage.startswith("rubric") else run.target_count
        sp = StageProgress(stage=stage, total=total, materialized=stage in materialized)
        sp.completed = artifacts.get(stage, 0)
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
            sp.failed = max(total - sp.completed - sp.pending, 0)
            sp.status = "settled" if sp.pending == 0 else "running"
        progress.stages.append(sp)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT batch_id) FROM orchestration_llmrequest "
            "WHERE process = %s AND status = 'in_flight' AND batch_id IS NOT NULL",
            [run.process],
        )
        row = cursor.fetchone()
        progress.batches_in_flight = int(row[0]) if row else 0
    progress.eta_seconds = _eta(run, progress)
    return progress


def _eta(run: Run, progress: RunProgress) -> float | None:
    """Naive ETA: remaining work at the run's average throughput so far."""
    if run.status not in {"running", "queued"} or run.started_at is None:
        return None
    elapsed = (timezone.now() - run.started_at).total_seconds()
    done = sum(s.completed + s.failed for s in progress.stages)
    total = sum(s.total for s in progress.stages)
    if done <= 0 or elapsed <= 0:
        return None
    return max(total - done, 0) * elapsed / done
