"""Failure diagnostics for one run: failed *attempts* versus *terminal* failures.

Why two views (DOMAIN.md 6, ``getRunDiagnostics``): a failed attempt is normal life at scale
(a 429, a parse miss) and is usually healed by the next attempt; a terminal failure is a key
whose *last* attempt failed and that has no artifact, i.e. work the run will never get back.
Operators need both: the first explains retries and cost, the second explains gaps.

Why aggregate SQL only: a run can have 10^5+ request rows. Every number here comes from a
``GROUP BY`` over the ``(process, stage, status)`` index; only a bounded handful of rows
(one sample per group, the first terminal keys) is ever read back whole. The "last attempt"
test is an anti-join against later attempts of the same key and the "has an artifact" test
probes the artifact's unique sample/target column with the id inside the custom key; both
are pinned to this run, so the work is bounded by the run's own rows, never by the history
of every run (checked with EXPLAIN on 12k rows: one index scan, one hash anti-join). The key
id is the one vendor-specific expression, so the embedded SQLite mode works too.

Used by the admin run page and ``GET /api/v1/runs/<ref>/diagnostics``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Count, Max, Min, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Substr

from orchestration.models import LlmRequest, RequestStatus, Run

#: Artifact table and its unique key column per stage. The key id (``sample:<id>:...``,
#: ``sample_score_target:<id>:...``) is the artifact's one-to-one column, so "this key has an
#: artifact" is one unique-index lookup per candidate row.
_ARTIFACTS = {
    "rubric_gen": ("orchestration_rubric", "sample_id"),
    "rubric_critic": ("orchestration_rubriccritic", "sample_id"),
    "score_gen": ("orchestration_score", "target_id"),
    "score_critic": ("orchestration_scorecritic", "target_id"),
}
_STAGE_ORDER = {stage: i for i, stage in enumerate(_ARTIFACTS)}

#: How many terminal keys are listed individually (the counts are always complete).
TERMINAL_KEY_LIMIT = 50
ERROR_EXCERPT = 2000
OUTPUT_EXCERPT = 1000


@dataclass
class SampleAttempt:
    """One representative failed attempt of a group (its raw error and output excerpt)."""

    request_id: int
    custom_key: str
    attempt_index: int
    error_message: str
    output_excerpt: str | None


@dataclass
class FailureGroup:
    stage: str
    error_class: str
    count: int  # attempts (failed attempts) or keys (terminal failures)
    keys: int  # distinct custom keys affected
    first_at: datetime | None = None
    last_at: datetime | None = None
    sample: SampleAttempt | None = None


@dataclass
class TerminalKey:
    request_id: int
    custom_key: str
    stage: str
    attempt_index: int
    error_class: str
    error_message: str


@dataclass
class RunDiagnostics:
    run_id: int
    process: str
    failed_attempts_total: int = 0
    failed_attempts: list[FailureGroup] = field(default_factory=list)
    terminal_failures_total: int = 0
    terminal_failures: list[FailureGroup] = field(default_factory=list)
    terminal_keys: list[TerminalKey] = field(default_factory=list)

    @property
    def has_terminal_failures(self) -> bool:
        return self.terminal_failures_total > 0

    def to_json(self) -> dict[str, Any]:
        def group(g: FailureGroup) -> dict[str, Any]:
            data = asdict(g)
            for key in ("first_at", "last_at"):
                value = getattr(g, key)
                data[key] = value.isoformat() if value else None
            return data

        return {
            "run_id": self.run_id,
            "process": self.process,
            "has_terminal_failures": self.has_terminal_failures,
            "failed_attempts": {
                "total": self.failed_attempts_total,
                "groups": [group(g) for g in self.failed_attempts],
            },
            "terminal_failures": {
                "total": self.terminal_failures_total,
                "groups": [group(g) for g in self.terminal_failures],
                "keys": [asdict(k) for k in self.terminal_keys],
                "keys_truncated": self.terminal_failures_total > len(self.terminal_keys),
            },
        }


def _key_id_sql() -> str:
    """SQL for the integer between the first and second ':' of the outer row's custom key."""
    col = "orchestration_llmrequest.custom_key"
    if connection.vendor == "postgresql":
        return f"CAST(split_part({col}, ':', 2) AS bigint)"
    # SQLite's CAST reads the leading integer of '12:rubric_gen' and ignores the rest.
    return f"CAST(substr({col}, instr({col}, ':') + 1) AS INTEGER)"


def _terminal_condition(run_id: int) -> RawSQL:
    """True for a row that is its key's last attempt and whose key has no artifact.

    Both subqueries are pinned to this run (``process``/``stage`` on the later-attempt
    anti-join, ``run_id`` on the artifact tables) so that whichever plan Postgres picks (a
    hash over the run's rows or per-row index probes) it never touches other runs' rows: the
    tables hold every run's history.
    """
    t = "orchestration_llmrequest"
    clauses = [
        "NOT EXISTS (SELECT 1 FROM orchestration_llmrequest n "
        f"WHERE n.process = {t}.process AND n.stage = {t}.stage "
        f"AND n.custom_key = {t}.custom_key AND n.attempt_index > {t}.attempt_index)"
    ]
    key_id = _key_id_sql()
    params: list[int] = []
    for stage, (table, column) in _ARTIFACTS.items():
        clauses.append(
            f"NOT ({t}.stage = '{stage}' AND EXISTS "
            f"(SELECT 1 FROM {table} a WHERE a.run_id = %s AND a.{column} = {key_id}))"
        )
        params.append(run_id)
    # Every interpolated name is a constant of this module; the run id is a parameter.
    return RawSQL(" AND ".join(clauses), params, output_field=BooleanField())  # noqa: S611


def _groups(rows: QuerySet[LlmRequest]) -> tuple[list[FailureGroup], dict[int, FailureGroup]]:
    """Group ``rows`` by (stage, error_class): counts, time span and the newest row's id."""
    groups: list[FailureGroup] = []
    by_sample: dict[int, FailureGroup] = {}
    aggregated = (
        rows.order_by()
        .values("stage", "error_class")
        .annotate(
            n=Count("id"),
            keys=Count("custom_key", distinct=True),
            first_at=Min("created_at"),
            last_at=Max("created_at"),
            sample_id=Max("id"),
        )
    )
    for row in aggregated:
        g = FailureGroup(
            stage=row["stage"],
            error_class=row["error_class"] or "unknown",
            count=row["n"],
            keys=row["keys"],
            first_at=row["first_at"],
            last_at=row["last_at"],
        )
        groups.append(g)
        by_sample[row["sample_id"]] = g
    groups.sort(key=lambda g: (_STAGE_ORDER.get(g.stage, len(_STAGE_ORDER)), -g.count))
    return groups, by_sample


def _attach_samples(*maps: dict[int, FailureGroup]) -> None:
    """One query for every group's representative row (error and output excerpts only).

    The same row can represent a group in both lists (a terminal attempt is also a failed
    attempt), hence several maps.
    """
    ids = {rid for m in maps for rid in m}
    if not ids:
        return
    rows = (
        LlmRequest.objects.filter(pk__in=sorted(ids))
        .annotate(
            error_excerpt=Substr("error_message", 1, ERROR_EXCERPT),
            output_excerpt=Substr("output_text", 1, OUTPUT_EXCERPT),
        )
        .values("id", "custom_key", "attempt_index", "error_excerpt", "output_excerpt")
    )
    for row in rows:
        sample = SampleAttempt(
            request_id=row["id"],
            custom_key=row["custom_key"],
            attempt_index=row["attempt_index"],
            error_message=row["error_excerpt"] or "",
            output_excerpt=row["output_excerpt"],
        )
        for m in maps:
            if row["id"] in m:
                m[row["id"]].sample = sample


def run_diagnostics(*, run: Run, key_limit: int = TERMINAL_KEY_LIMIT) -> RunDiagnostics:
    """Failed attempts and terminal failures of ``run``, grouped by (stage, error_class).

    1. Failed attempts: every ``failed`` row, grouped; counts attempts and distinct keys.
    2. Terminal failures: failed rows that are the last attempt of their key and whose key
       has no artifact (a retry row, pending or not, means the key is still alive).
    3. One representative row per group (the newest) and the first ``key_limit`` terminal
       keys are read back with truncated text; everything else stays in the database.
    Canceled attempts are neither: cancel is an operator decision, not a failure.
    """
    diag = RunDiagnostics(run_id=run.pk, process=run.process)
    failed_rows = LlmRequest.objects.filter(process=run.process, status=RequestStatus.FAILED)
    terminal_rows = failed_rows.filter(_terminal_condition(run.pk))
    diag.failed_attempts, failed_samples = _groups(failed_rows)
    diag.terminal_failures, terminal_samples = _groups(terminal_rows)
    _attach_samples(failed_samples, terminal_samples)
    diag.failed_attempts_total = sum(g.count for g in diag.failed_attempts)
    diag.terminal_failures_total = sum(g.count for g in diag.terminal_failures)
    keys = (
        terminal_rows.order_by("id")
        .annotate(error_excerpt=Substr("error_message", 1, ERROR_EXCERPT))
        .values_list("id", "custom_key", "stage", "attempt_index", "error_class", "error_excerpt")
    )[:key_limit]
    diag.terminal_keys = [
        TerminalKey(
            request_id=rid,
            custom_key=key,
            stage=stage,
            attempt_index=attempt,
            error_class=error_class or "unknown",
            error_message=message or "",
        )
        for rid, key, stage, attempt, error_class, message in keys
    ]
    return diag
