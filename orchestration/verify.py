"""The "nothing lost" verifier: PROOF.md section 1, checked from Postgres (and the provider log).

Why it exists: the chaos suite kills workers, wipes Redis and restarts Postgres; a test that
only asserts "the run completed" would miss a lost target, a second artifact, a transition
that ran twice or a batch that was paid for twice. Every invariant below is checked with
aggregate SQL (one statement per check, ``GROUP BY``/``FILTER``, a few example ids each), never
a per-row Python loop, so a run with 10^5 targets verifies in seconds.

``verify_run`` checks one judging run (``run:<id>``); ``verify_window_run`` an evidence window
run (``window:<id>``, artifacts are the ``lN_*`` content columns); ``verify_process`` only the
transport-level invariants of any process (``bench:<n>`` load tests). Checks:

* **requests** (invariant 2, 4): attempts per key are contiguous ``1..n``, none beyond
  ``max_attempts`` (a retry after a 429 carries one more: 429s do not use up attempts, and
  nothing else may change the limit), only the last attempt may be non-failed; a failed last attempt is a real
  exhaustion (attempts used up or a non-retryable class); nothing pending or in flight once
  the owner is terminal; no attempt still in flight inside a finished batch;
* **targets** (2): every target of every materialized stage is final: artifact, exhausted,
  canceled (canceled runs only) or blocked by an upstream failure; ``lost`` counts the rest;
* **artifacts** (3): the unique constraint exists and holds; each artifact's
  ``llm_request_id`` is a succeeded attempt of the matching custom key in the same run; each
  succeeded attempt produced the artifact;
* **submissions** (4): with the simulator's counts (``r<pk>`` -> accepted times), every extra
  acceptance of an attempt of this process is reported with its count; with the full log,
  a succeeded attempt the provider never accepted is reported too;
* **transitions and counters** (5): each stage materialized once, ``stage_advanced`` at most
  once per stage and in stage order, ``current_stage`` where the ledger says; the counters
  of ``run_progress`` equal what the artifacts and attempt rows say; batch counters equal
  their member rows;
* **ledger** (6): exactly one ``run_created``, one terminal event matching a terminal status
  (none otherwise); ``request_exhausted`` events == exhausted keys, ``request_retry_scheduled``
  events == failed attempts that have a successor; per batch and process one
  ``batch_formed``, at most one ``batch_submitted``+``batch_recovered``, at most one
  ``batch_completed``+``batch_failed``.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import connection, transaction

from orchestration.models import STAGE_ORDER, TERMINAL_RUN_STATUSES, Run
from orchestration.transport.providers.base import RETRYABLE_CLASSES

EXAMPLES = 5
RETRYABLE = tuple(sorted(c.value for c in RETRYABLE_CLASSES))
LEASE_EXPIRED_PREFIX = "direct call lease expired"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: a stable ``code``, what it means, how many, a few ids to look at."""

    code: str
    message: str
    count: int
    examples: list[str] = field(default_factory=list)


@dataclass(slots=True)
class VerifyReport:
    """The verifier's answer. ``ok`` is true exactly when ``violations`` is empty."""

    subject: str
    ok: bool
    violations: list[Violation]
    stats: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "ok": self.ok,
            "violations": [asdict(v) for v in self.violations],
            "stats": self.stats,
        }

    def codes(self) -> set[str]:
        return {v.code for v in self.violations}

    def render(self) -> str:
        """Human output of ``manage.py verify_run``."""
        verdict = "OK" if self.ok else f"FAILED ({len(self.violations)} violations)"
        lines = [f"verify {self.subject}: {verdict}"]
        stats = self.stats
        head = {k: stats[k] for k in ("status", "current_stage", "requests", "keys") if k in stats}
        if head:
            lines.append("  " + "  ".join(f"{k}={v}" for k, v in head.items()))
        for name, row in (stats.get("stages") or {}).items():
            cells = "  ".join(f"{k}={v}" for k, v in row.items())
            lines.append(f"  {name:<14} {cells}")
        subs = stats.get("submissions")
        if subs:
            lines.append("  submissions: " + "  ".join(f"{k}={v}" for k, v in subs.items()))
        extra = {
            k: v
            for k, v in stats.items()
            if k not in {"status", "current_stage", "requests", "keys", "stages", "submissions"}
        }
        if extra:
            lines.append("  " + "  ".join(f"{k}={v}" for k, v in extra.items()))
        for v in self.violations:
            example = f" e.g. {', '.join(v.examples)}" if v.examples else ""
            lines.append(f"  VIOLATION [{v.code}] x{v.count}: {v.message}{example}")
        return "\n".join(lines)


class _Collector:
    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.stats: dict[str, Any] = {}

    def add(self, code: str, message: str, count: int, examples: Iterable[Any] = ()) -> None:
        if count:
            ex = [str(e) for e in list(examples or [])[:EXAMPLES]]
            self.violations.append(Violation(code, message, int(count), ex))

    def report(self, subject: str) -> VerifyReport:
        return VerifyReport(
            subject=subject,
            ok=not self.violations,
            violations=self.violations,
            stats=self.stats,
        )


class VerifierUnsupported(RuntimeError):
    """The verifier's aggregate SQL (FILTER, DISTINCT ON, arrays) needs PostgreSQL."""


@contextlib.contextmanager
def _snapshot() -> Iterator[None]:
    """One read-only REPEATABLE READ snapshot for every check, so a run that is still moving
    cannot make two checks disagree (inside a caller's transaction: the caller's view)."""
    if connection.vendor != "postgresql":
        raise VerifierUnsupported(
            "the verifier needs PostgreSQL (set DATABASE_URL); the embedded SQLite default "
            "is not supported"
        )
    outer = connection.in_atomic_block
    with transaction.atomic():
        if not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _one(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> tuple[Any, ...]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return tuple(row) if row is not None else ()


def _all(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [tuple(r) for r in cursor.fetchall()]


# --- transport-level checks (any process) -----------------------------------------------------


def _request_checks(c: _Collector, process: str, *, terminal: bool, canceled: bool) -> None:
    """Attempt structure, exhaustion, open work and the request side of the ledger."""
    p = {"p": process, "retryable": list(RETRYABLE)}
    (
        rows,
        keys,
        retried_keys,
        open_rows,
        open_ex,
        gap_keys,
        gap_ex,
        over,
        over_ex,
        last_failed,
        early,
        early_ex,
        lease_lost,
    ) = _one(
        """
        WITH k AS (
          SELECT custom_key, count(*) AS n, min(attempt_index) AS lo, max(attempt_index) AS hi
          FROM orchestration_llmrequest WHERE process = %(p)s GROUP BY custom_key
        ), last AS (
          SELECT DISTINCT ON (custom_key) custom_key, attempt_index, max_attempts, status,
                 error_class
          FROM orchestration_llmrequest WHERE process = %(p)s
          ORDER BY custom_key, attempt_index DESC
        ), r AS (
          SELECT count(*) AS rows,
                 count(*) FILTER (WHERE status IN ('pending', 'in_flight')) AS open_rows,
                 (array_agg(id ORDER BY id) FILTER (WHERE status IN ('pending', 'in_flight'))
                   )[1:5] AS open_ex,
                 count(*) FILTER (WHERE attempt_index > max_attempts) AS over,
                 (array_agg(custom_key || '#' || attempt_index ORDER BY id)
                   FILTER (WHERE attempt_index > max_attempts))[1:5] AS over_ex,
                 count(*) FILTER (WHERE status = 'failed'
                                  AND error_message LIKE 'direct call lease expired%%')
                   AS lease_lost
          FROM orchestration_llmrequest WHERE process = %(p)s
        )
        SELECT r.rows,
               (SELECT count(*) FROM k),
               (SELECT count(*) FROM k WHERE n > 1),
               r.open_rows, r.open_ex,
               (SELECT count(*) FROM k WHERE lo <> 1 OR hi <> n),
               (SELECT (array_agg(custom_key ORDER BY custom_key))[1:5] FROM k
                 WHERE lo <> 1 OR hi <> n),
               r.over, r.over_ex,
               (SELECT count(*) FROM last WHERE status = 'failed'),
               (SELECT count(*) FROM last WHERE status = 'failed'
                  AND attempt_index < max_attempts AND error_class = ANY(%(retryable)s)),
               (SELECT (array_agg(custom_key || '#' || attempt_index ORDER BY custom_key))[1:5]
                  FROM last WHERE status = 'failed' AND attempt_index < max_attempts
                  AND error_class = ANY(%(retryable)s)),
               r.lease_lost
        FROM r
        """,
        p,
    )
    c.stats["requests"] = rows
    c.stats["keys"] = keys
    c.stats["retried_keys"] = retried_keys
    c.stats["exhausted_keys"] = last_failed
    # Attempts whose direct call may have reached the provider before the worker died: the
    # key was then called again under the next attempt (paid twice, allowed by PROOF.md F1).
    c.stats["direct_calls_lost_in_flight"] = lease_lost
    if terminal:
        c.add(
            "open_after_terminal",
            "attempts still pending/in flight although the owner is terminal",
            open_rows,
            open_ex,
        )
    c.add(
        "attempt_gap",
        "attempt indexes of a key are not contiguous from 1",
        gap_keys,
        gap_ex,
    )
    c.add("attempt_over_limit", "attempt index beyond max_attempts", over, over_ex)
    # Only the last attempt of a key may be anything but failed.
    # A retry keeps its predecessor's max_attempts, or one more after a 429 (which does not
    # use up an attempt); anything else would let a key retry beyond its policy.
    (nonlast, nonlast_ex, raised, raised_ex) = _one(
        """
        SELECT count(*) FILTER (WHERE r.status <> 'failed'),
               (array_agg(r.custom_key || '#' || r.attempt_index || ':' || r.status
                          ORDER BY r.id) FILTER (WHERE r.status <> 'failed'))[1:5],
               count(*) FILTER (WHERE n.max_attempts <> r.max_attempts AND NOT (
                   n.max_attempts = r.max_attempts + 1 AND r.error_class = 'rate_limit')),
               (array_agg(n.custom_key || '#' || n.attempt_index || ' max ' || r.max_attempts
                          || '->' || n.max_attempts || ' after ' || r.error_class ORDER BY n.id)
                 FILTER (WHERE n.max_attempts <> r.max_attempts AND NOT (
                   n.max_attempts = r.max_attempts + 1 AND r.error_class = 'rate_limit')))[1:5]
        FROM orchestration_llmrequest n
        JOIN orchestration_llmrequest r
          ON r.custom_key = n.custom_key AND r.attempt_index = n.attempt_index - 1
        WHERE n.process = %(p)s AND n.attempt_index > 1
        """,
        p,
    )
    c.add(
        "non_last_attempt_not_failed",
        "an attempt that has a successor is not failed (two live attempts for one key)",
        nonlast,
        nonlast_ex,
    )
    c.add(
        "attempt_limit_changed",
        "a retry's max_attempts differs from its predecessor's other than +1 after a 429",
        raised,
        raised_ex,
    )
    if not canceled:
        c.add(
            "retry_missing",
            "last attempt failed with a retryable class and attempts left, but no retry exists",
            early,
            early_ex,
        )
    # In-flight attempts inside a batch that is already finished can never complete.
    (stuck, stuck_ex) = _one(
        """
        SELECT count(*), (array_agg(r.id ORDER BY r.id))[1:5]
        FROM orchestration_llmrequest r JOIN orchestration_llmbatch b ON b.id = r.batch_id
        WHERE r.process = %(p)s AND r.status = 'in_flight'
          AND b.status IN ('succeeded', 'failed', 'canceled')
        """,
        p,
    )
    c.add("stuck_in_finished_batch", "attempt in flight in a finished batch", stuck, stuck_ex)
    # The request side of the ledger (written in the same transaction as the attempt rows).
    (exhausted_events, retry_events, retried_rows) = _one(
        """
        SELECT
          (SELECT count(*) FROM orchestration_runevent
            WHERE process = %(p)s AND event_type = 'request_exhausted'),
          (SELECT count(*) FROM orchestration_runevent
            WHERE process = %(p)s AND event_type = 'request_retry_scheduled'),
          (SELECT count(*) FROM orchestration_llmrequest r
            WHERE r.process = %(p)s AND r.status = 'failed' AND EXISTS (
              SELECT 1 FROM orchestration_llmrequest n
              WHERE n.custom_key = r.custom_key AND n.attempt_index = r.attempt_index + 1))
        """,
        p,
    )
    c.add(
        "ledger_exhausted_mismatch",
        f"{exhausted_events} request_exhausted events for {last_failed} exhausted keys",
        abs(exhausted_events - last_failed),
    )
    c.add(
        "ledger_retry_mismatch",
        f"{retry_events} request_retry_scheduled events for {retried_rows} retried attempts",
        abs(retry_events - retried_rows),
    )


def _reference_checks(c: _Collector, process: str) -> None:
    """Attempt rows pointing at a batch or prompt template that does not exist.

    The two links carry no database constraint (see LlmRequest: the per-row trigger cost
    too much at 10^6 rows), so the verifier is where a dangling one would show.
    """
    dangling = _all(
        """
        SELECT r.id FROM orchestration_llmrequest r
        LEFT JOIN orchestration_llmbatch b ON b.id = r.batch_id
        LEFT JOIN orchestration_prompttemplate t ON t.id = r.system_prompt_id
        WHERE r.process = %(p)s
          AND ((r.batch_id IS NOT NULL AND b.id IS NULL)
               OR (r.system_prompt_id IS NOT NULL AND t.id IS NULL))
        ORDER BY r.id
        """,
        {"p": process},
    )
    c.add(
        "dangling_reference",
        "attempt rows reference a batch or system prompt that does not exist",
        len(dangling),
        [row[0] for row in dangling],
    )


def _batch_checks(c: _Collector, process: str) -> None:
    """Per batch and process: one formation, at most one submission, one ending; counters."""
    _reference_checks(c, process)
    p = {"p": process}
    rows = _all(
        """
        WITH b AS (
          SELECT DISTINCT batch_id AS id FROM orchestration_llmrequest
          WHERE process = %(p)s AND batch_id IS NOT NULL
        ), e AS (
          SELECT batch_id,
                 count(*) FILTER (WHERE event_type = 'batch_formed') AS formed,
                 count(*) FILTER (WHERE event_type IN ('batch_submitted', 'batch_recovered'))
                   AS submitted,
                 count(*) FILTER (WHERE event_type = 'batch_recovered') AS recovered,
                 count(*) FILTER (WHERE event_type IN ('batch_completed', 'batch_failed'))
                   AS ended
          FROM orchestration_runevent
          WHERE process = %(p)s AND batch_id IS NOT NULL GROUP BY batch_id
        ), m AS (
          SELECT batch_id, count(*) FILTER (WHERE status = 'succeeded') AS ok,
                 count(*) FILTER (WHERE status = 'failed') AS failed
          FROM orchestration_llmrequest WHERE batch_id IN (SELECT id FROM b) GROUP BY batch_id
        )
        SELECT b.id, lb.status, lb.provider_batch_id IS NOT NULL,
               coalesce(e.formed, 0), coalesce(e.submitted, 0), coalesce(e.recovered, 0),
               coalesce(e.ended, 0),
               lb.succeeded_count, lb.failed_count, coalesce(m.ok, 0), coalesce(m.failed, 0)
        FROM b JOIN orchestration_llmbatch lb ON lb.id = b.id
        LEFT JOIN e ON e.batch_id = b.id LEFT JOIN m ON m.batch_id = b.id
        """,
        p,
    )
    formed_bad: list[int] = []
    submitted_twice: list[int] = []
    ended_twice: list[int] = []
    counters_bad: list[int] = []
    finished_unrecorded: list[int] = []
    recovered = 0
    for bid, status, has_pid, formed, submitted, rec, ended, s_ok, s_fail, m_ok, m_fail in rows:
        recovered += rec
        if formed != 1:
            formed_bad.append(bid)
        if submitted > 1:
            submitted_twice.append(bid)
        if ended > 1:
            ended_twice.append(bid)
        if status in ("succeeded", "failed"):
            if ended == 0:
                finished_unrecorded.append(bid)
            if (s_ok, s_fail) != (m_ok, m_fail):
                counters_bad.append(bid)
        if has_pid and submitted == 0:
            finished_unrecorded.append(bid)
    c.stats["batches"] = len(rows)
    c.stats["batches_recovered"] = recovered
    c.add("ledger_batch_formed", "batch_formed events per batch != 1", len(formed_bad), formed_bad)
    c.add(
        "ledger_batch_submitted_twice",
        "more than one batch_submitted/batch_recovered for one batch",
        len(submitted_twice),
        submitted_twice,
    )
    c.add(
        "ledger_batch_ended_twice",
        "more than one batch_completed/batch_failed for one batch",
        len(ended_twice),
        ended_twice,
    )
    c.add(
        "ledger_batch_missing_event",
        "a batch was submitted or finished without the matching ledger event",
        len(finished_unrecorded),
        finished_unrecorded,
    )
    c.add(
        "batch_counter_mismatch",
        "finished batch's succeeded/failed counters differ from its member rows",
        len(counters_bad),
        counters_bad,
    )


_ENGINE_ID = re.compile(r"^r(\d{1,18})$")


def _submission_checks(
    c: _Collector, process: str, submissions: Mapping[str, int] | None, *, complete: bool
) -> None:
    """Extra provider acceptances of this process's attempts (and phantom results)."""
    if submissions is None:
        c.stats["submissions"] = {"checked": False}
        return
    dup: dict[int, int] = {}
    for key, count in submissions.items():
        m = _ENGINE_ID.match(key)
        if m and count > 1:
            dup[int(m.group(1))] = int(count)
    extra = 0
    examples: list[str] = []
    in_flight_extra = 0
    if dup:
        rows = _all(
            "SELECT id, custom_key, attempt_index, route, error_message "
            "FROM orchestration_llmrequest WHERE process = %s AND id = ANY(%s) ORDER BY id",
            [process, list(dup)],
        )
        for rid, key, attempt, route, error in rows:
            n = dup[rid] - 1
            extra += n
            if route == "direct" and str(error).startswith(LEASE_EXPIRED_PREFIX):
                in_flight_extra += n
            examples.append(f"r{rid} ({key}#{attempt}, {route}) x{dup[rid]}")
    c.stats["submissions"] = {
        "checked": True,
        "duplicated_attempts": len(examples),
        "extra": extra,
        "extra_in_flight_at_crash": in_flight_extra,
    }
    c.add(
        "extra_submission",
        "one (custom_key, attempt) was accepted by the provider more than once",
        extra,
        examples,
    )
    if complete:
        seen = [int(m.group(1)) for k, v in submissions.items() if v and (m := _ENGINE_ID.match(k))]
        (phantom, phantom_ex) = _one(
            """
            SELECT count(*), (array_agg(r.id ORDER BY r.id))[1:5]
            FROM orchestration_llmrequest r
            LEFT JOIN unnest(%s::bigint[]) AS s(id) ON s.id = r.id
            WHERE r.process = %s AND r.status = 'succeeded' AND s.id IS NULL
            """,
            [seen, process],
        )
        c.add(
            "result_without_submission",
            "a succeeded attempt that the provider never accepted",
            phantom,
            phantom_ex,
        )


def verify_process(
    *,
    process: str,
    submissions: Mapping[str, int] | None = None,
    terminal: bool = False,
    submissions_complete: bool = False,
) -> VerifyReport:
    """Transport-level invariants for any process (``bench:1`` load tests, or a part of a run)."""
    c = _Collector()
    with _snapshot():
        _request_checks(c, process, terminal=terminal, canceled=False)
        _batch_checks(c, process)
        _submission_checks(c, process, submissions, complete=submissions_complete)
    return c.report(process)


# --- judging runs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StageDef:
    unit_table: str
    unit_col: str
    artifact_table: str
    prefix: str
    eligible: str  # SQL over unit alias ``u``: may this unit have a request in the stage?


_STAGES: dict[str, _StageDef] = {
    "rubric_gen": _StageDef("orchestration_sample", "sample_id", "orchestration_rubric", "sample", "true"),
    "rubric_critic": _StageDef(
        "orchestration_sample",
        "sample_id",
        "orchestration_rubriccritic",
        "sample",
        "EXISTS (SELECT 1 FROM orchestration_rubric x WHERE x.sample_id = u.id)",
    ),
    "score_gen": _StageDef(
        "orchestration_scoretarget",
        "target_id",
        "orchestration_score",
        "sample_score_target",
        "EXISTS (SELECT 1 FROM orchestration_rubric x WHERE x.sample_id = u.sample_id)",
    ),
    "score_critic": _StageDef(
        "orchestration_scoretarget",
        "target_id",
        "orchestration_scorecritic",
        "sample_score_target",
        "EXISTS (SELECT 1 FROM orchestration_score x WHERE x.target_id = u.id)",
    ),
}  # fmt: skip


def _unique_on(table: str, column: str) -> bool:
    """Whether the database enforces uniqueness of ``table.column`` (the real guarantee)."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return any(
        info.get("unique") and info.get("columns") == [column] for info in constraints.values()
    )


def _stage_checks(
    c: _Collector, run: Run, stage: str, *, terminal: bool, canceled: bool
) -> dict[str, int]:
    d = _STAGES[stage]
    key_expr = f"'{d.prefix}:' || u.id || ':{stage}'"
    row = _one(
        f"""
        WITH last AS (
          SELECT DISTINCT ON (custom_key) custom_key, status
          FROM orchestration_llmrequest WHERE process = %(p)s AND stage = %(s)s
          ORDER BY custom_key, attempt_index DESC
        ), units AS (
          SELECT u.id, ({d.eligible}) AS eligible, a.id AS artifact_id, l.status AS last
          FROM {d.unit_table} u
          LEFT JOIN {d.artifact_table} a ON a.{d.unit_col} = u.id
          LEFT JOIN last l ON l.custom_key = {key_expr}
          WHERE u.run_id = %(run)s
        )
        SELECT count(*),
          count(*) FILTER (WHERE artifact_id IS NOT NULL),
          count(*) FILTER (WHERE artifact_id IS NULL AND last = 'failed'),
          count(*) FILTER (WHERE artifact_id IS NULL AND last = 'canceled'),
          count(*) FILTER (WHERE artifact_id IS NULL AND last IS NULL AND NOT eligible),
          count(*) FILTER (WHERE artifact_id IS NULL AND last IN ('pending', 'in_flight')),
          count(*) FILTER (WHERE artifact_id IS NULL AND last IS NULL AND eligible),
          (array_agg(id ORDER BY id) FILTER (WHERE artifact_id IS NULL AND last IS NULL
                                             AND eligible))[1:5],
          count(*) FILTER (WHERE artifact_id IS NULL AND last = 'succeeded'),
          (array_agg(id ORDER BY id) FILTER (WHERE artifact_id IS NULL
                                             AND last = 'succeeded'))[1:5],
          count(*) FILTER (WHERE artifact_id IS NOT NULL AND last IS DISTINCT FROM 'succeeded'),
          (array_agg(id ORDER BY id) FILTER (WHERE artifact_id IS NOT NULL
                                             AND last IS DISTINCT FROM 'succeeded'))[1:5],
          (SELECT count(*) FROM last l WHERE NOT EXISTS (
              SELECT 1 FROM {d.unit_table} u
              WHERE u.id = (CASE WHEN l.custom_key ~ '^{d.prefix}:[0-9]{{1,18}}:{stage}$'
                                 THEN split_part(l.custom_key, ':', 2)::bigint END)
                AND u.run_id = %(run)s))
        FROM units
        """,
        {"p": run.process, "s": stage, "run": run.pk},
    )
    (total, artifacts, exhausted, canceled_n, blocked, open_n, lost, lost_ex, s_no_art,
     s_no_art_ex, art_not_last, art_not_last_ex, foreign) = row  # fmt: skip
    c.add(
        "lost_target",
        f"{stage}: eligible target with neither artifact nor any attempt",
        lost,
        lost_ex,
    )
    if terminal:
        c.add(
            "target_not_final",
            f"{stage}: target still pending/in flight in a terminal run",
            open_n,
        )
    if canceled_n and not canceled:
        c.add(
            "canceled_in_live_run",
            f"{stage}: attempts canceled although the run was not canceled",
            canceled_n,
        )
    c.add(
        "succeeded_without_artifact",
        f"{stage}: last attempt succeeded but no artifact exists",
        s_no_art,
        s_no_art_ex,
    )
    c.add(
        "artifact_without_success",
        f"{stage}: artifact exists but the key's last attempt is not succeeded",
        art_not_last,
        art_not_last_ex,
    )
    c.add("foreign_request", f"{stage}: attempts whose key is not a unit of this run", foreign)
    # Artifact -> request pointer (invariant 3: it matches what the provider returned).
    (bad_ptr, bad_ptr_ex, dup_art) = _one(
        f"""
        SELECT
          (SELECT count(*) FROM {d.artifact_table} a
             LEFT JOIN orchestration_llmrequest r ON r.id = a.llm_request_id
             WHERE a.run_id = %(run)s AND (r.id IS NULL OR r.status <> 'succeeded'
               OR r.process <> %(p)s OR r.stage <> %(s)s
               OR r.custom_key <> '{d.prefix}:' || a.{d.unit_col} || ':{stage}')),
          (SELECT (array_agg(a.id ORDER BY a.id))[1:5] FROM {d.artifact_table} a
             LEFT JOIN orchestration_llmrequest r ON r.id = a.llm_request_id
             WHERE a.run_id = %(run)s AND (r.id IS NULL OR r.status <> 'succeeded'
               OR r.process <> %(p)s OR r.stage <> %(s)s
               OR r.custom_key <> '{d.prefix}:' || a.{d.unit_col} || ':{stage}')),
          (SELECT count(*) FROM (SELECT {d.unit_col} FROM {d.artifact_table}
             WHERE run_id = %(run)s GROUP BY {d.unit_col} HAVING count(*) > 1) x)
        """,
        {"p": run.process, "s": stage, "run": run.pk},
    )
    c.add(
        "artifact_request_mismatch",
        f"{stage}: artifact's llm_request_id is not a succeeded attempt of its key in this run",
        bad_ptr,
        bad_ptr_ex,
    )
    c.add("duplicate_artifact", f"{stage}: more than one artifact for one unit", dup_art)
    if not _unique_on(d.artifact_table, d.unit_col):
        c.add(
            "artifact_not_unique_in_db",
            f"{d.artifact_table}.{d.unit_col} has no unique constraint",
            1,
        )
    return {
        "total": total,
        "artifacts": artifacts,
        "exhausted": exhausted,
        "canceled": canceled_n,
        "blocked": blocked,
        "open": open_n,
        "lost": lost,
    }


def _run_ledger_checks(c: _Collector, run: Run) -> None:
    events = _all(
        "SELECT event_type, stage, count(*), min(id) FROM orchestration_runevent "
        "WHERE process = %s GROUP BY event_type, stage",
        [run.process],
    )
    count: dict[tuple[str, str], int] = {}
    by_type: dict[str, int] = {}
    for event_type, stage, n, _first in events:
        count[(event_type, stage)] = n
        by_type[event_type] = by_type.get(event_type, 0) + n
    materialized = list(run.materialized_stages or [])
    c.add("ledger_run_created", "run_created events != 1", abs(by_type.get("run_created", 0) - 1))
    started = by_type.get("run_started", 0)
    if started > 1 or (materialized and started != 1):
        c.add("ledger_run_started", f"{started} run_started events", max(started, 1))
    # Materialization: once per materialized stage, never for others, and a stage prefix.
    if materialized != list(STAGE_ORDER[: len(materialized)]):
        c.add("stage_order", f"materialized stages {materialized} are not a stage prefix", 1)
    if materialized and materialized[-1] != run.current_stage:
        c.add(
            "stage_current_mismatch",
            f"current_stage {run.current_stage} is not the last materialized stage",
            1,
        )
    for stage in STAGE_ORDER:
        n = count.get(("stage_materialized", stage), 0)
        want = 1 if stage in materialized else 0
        c.add(
            "stage_materialized_count",
            f"{stage}: {n} stage_materialized events, expected {want}",
            abs(n - want),
        )
        adv = count.get(("stage_advanced", stage), 0)
        want_adv = 1 if stage in materialized and stage != STAGE_ORDER[0] else 0
        c.add(
            "stage_advanced_count",
            f"{stage}: {adv} stage_advanced events, expected {want_adv}",
            abs(adv - want_adv),
        )
        settled = count.get(("stage_settled", stage), 0)
        paused_here = count.get(("run_paused", stage), 0)
        if settled > 1 + paused_here:
            c.add(
                "stage_settled_repeated",
                f"{stage}: {settled} stage_settled events (paused there {paused_here} times)",
                settled - 1 - paused_here,
            )
        if stage in materialized[:-1] and settled == 0:
            c.add("stage_settled_missing", f"{stage}: advanced past without stage_settled", 1)
    order = [
        s
        for (s,) in _all(
            "SELECT stage FROM orchestration_runevent WHERE process = %s "
            "AND event_type = 'stage_advanced' ORDER BY id",
            [run.process],
        )
    ]
    if order != list(STAGE_ORDER[1 : 1 + len(order)]):
        c.add("stage_advanced_order", f"stage_advanced sequence {order} out of order", 1)
    # Terminal events: exactly one, matching the status.
    terminal_events = {
        "completed": by_type.get("run_completed", 0),
        "failed": by_type.get("run_failed", 0),
        "canceled": by_type.get("run_canceled", 0),
    }
    for status, n in terminal_events.items():
        want = 1 if run.status == status else 0
        c.add(
            "ledger_terminal_event",
            f"{n} run_{status} events for a run that is {run.status}",
            abs(n - want),
        )
    if run.status == "completed" and (
        materialized != list(STAGE_ORDER) or run.current_stage != STAGE_ORDER[-1]
    ):
        c.add("completed_early", f"run completed with stages {materialized}", 1)


def _counter_checks(c: _Collector, run: Run, stages: dict[str, dict[str, int]]) -> None:
    """``run_progress`` (what operators see) must equal what the rows say."""
    from orchestration.selectors import run_progress

    samples, targets = _one(
        "SELECT (SELECT count(*) FROM orchestration_sample WHERE run_id = %s), "
        "(SELECT count(*) FROM orchestration_scoretarget WHERE run_id = %s)",
        [run.pk, run.pk],
    )
    c.add(
        "counter_samples",
        f"run.sample_count={run.sample_count} but {samples} samples",
        int(run.sample_count != samples),
    )
    c.add(
        "counter_targets",
        f"run.target_count={run.target_count} but {targets} targets",
        int(run.target_count != targets),
    )
    progress = run_progress(run=run)
    for stage, row in stages.items():
        sp = progress.stage(stage)
        derived_failed = row["exhausted"] + row["canceled"] + row["blocked"] + row["lost"]
        mismatch = []
        if sp.total != row["total"]:
            mismatch.append(f"total {sp.total}!={row['total']}")
        if sp.completed != row["artifacts"]:
            mismatch.append(f"completed {sp.completed}!={row['artifacts']}")
        if sp.pending != row["open"]:
            mismatch.append(f"pending {sp.pending}!={row['open']}")
        if sp.failed != derived_failed:
            mismatch.append(f"failed {sp.failed}!={derived_failed}")
        if sp.completed + sp.failed + sp.pending != sp.total:
            mismatch.append("completed+failed+pending != total")
        c.add(
            "counter_mismatch",
            f"{stage}: run_progress disagrees with the rows: {'; '.join(mismatch)}",
            len(mismatch),
        )


def verify_run(
    *,
    run: Run,
    submissions: Mapping[str, int] | None,
    submissions_complete: bool = False,
) -> VerifyReport:
    """Check every PROOF.md section 1 invariant for one judging run (see module docstring).

    ``submissions`` maps provider custom ids (``r<pk>``) to how many times the provider
    accepted them (only ids seen more than once are needed; ``fetch_submissions``). With
    ``submissions_complete`` (the full log) a succeeded attempt the provider never accepted
    is reported as well.
    """
    with _snapshot():
        return _verify_run(run, submissions, submissions_complete)


def _verify_run(
    run: Run, submissions: Mapping[str, int] | None, submissions_complete: bool
) -> VerifyReport:
    run.refresh_from_db()
    terminal = run.status in TERMINAL_RUN_STATUSES
    canceled = run.status == "canceled"
    c = _Collector()
    c.stats["status"] = run.status
    c.stats["current_stage"] = run.current_stage
    _request_checks(c, run.process, terminal=terminal, canceled=canceled)
    stages: dict[str, dict[str, int]] = {}
    for stage in run.materialized_stages or []:
        if stage in _STAGES:
            stages[stage] = _stage_checks(c, run, stage, terminal=terminal, canceled=canceled)
    c.stats["stages"] = stages
    (stray, stray_ex) = _one(
        "SELECT count(*), (array_agg(DISTINCT stage))[1:5] FROM orchestration_llmrequest "
        "WHERE process = %s AND NOT (stage = ANY(%s))",
        [run.process, list(run.materialized_stages or [])],
    )
    c.add(
        "request_in_unmaterialized_stage",
        "attempts for a stage never materialized",
        stray,
        stray_ex,
    )
    _counter_checks(c, run, stages)
    _run_ledger_checks(c, run)
    _batch_checks(c, run.process)
    _submission_checks(c, run.process, submissions, complete=submissions_complete)
    return c.report(f"run {run.pk} ({run.experiment.tag})")


# --- evidence window runs -------------------------------------------------------------------

_WINDOW_STAGES = ("l1_cleaned", "l2_neutralized", "l3_abstracted")
_KEY_WITH_ID = r"^[a-z_]+:[0-9]+:"


def verify_window_run(
    *,
    window_run: Any,
    submissions: Mapping[str, int] | None,
    submissions_complete: bool = False,
) -> VerifyReport:
    """The same invariants for an evidence window run (``window:<id>``).

    Generic on purpose (the window pipeline owns its key layout): an artifact is a non-null
    ``lN_*`` column of an evidence row of the window run, its request is ``lN_request_id``;
    attempts are matched to evidence rows by the id in their key (``<prefix>:<evidence id>:
    <stage>``), and a row whose lower level is missing is blocked, not lost.
    """
    with _snapshot():
        return _verify_window_run(window_run, submissions, submissions_complete)


def _verify_window_run(
    window_run: Any, submissions: Mapping[str, int] | None, submissions_complete: bool
) -> VerifyReport:
    window_run.refresh_from_db()
    process = f"window:{window_run.pk}"
    status = str(window_run.status)
    terminal = status in ("completed", "failed", "canceled")
    c = _Collector()
    c.stats["status"] = status
    c.stats["current_stage"] = str(getattr(window_run, "current_stage", ""))
    _request_checks(c, process, terminal=terminal, canceled=status == "canceled")
    materialized = [
        s for s in (getattr(window_run, "materialized_stages", None) or []) if s in _WINDOW_STAGES
    ]
    stages: dict[str, dict[str, int]] = {}
    for stage in materialized:
        level = stage[:2]
        lower = {"l1": "l0_raw", "l2": "l1_cleaned", "l3": "l2_neutralized"}[level]
        row = _one(
            f"""
            WITH last AS (
              SELECT DISTINCT ON (custom_key) custom_key, status,
                     split_part(custom_key, ':', 2)::bigint AS evidence_id
              FROM orchestration_llmrequest
              WHERE process = %(p)s AND stage = %(s)s AND custom_key ~ %(pat)s
              ORDER BY custom_key, attempt_index DESC
            )
            SELECT count(*),
              count(*) FILTER (WHERE e.{stage} IS NOT NULL),
              count(*) FILTER (WHERE e.{stage} IS NULL AND l.status = 'failed'),
              count(*) FILTER (WHERE e.{stage} IS NULL AND l.status IS NULL
                               AND e.{lower} IS NULL),
              count(*) FILTER (WHERE e.{stage} IS NULL AND l.status IN ('pending', 'in_flight')),
              count(*) FILTER (WHERE e.{stage} IS NULL AND l.status IS NULL
                               AND e.{lower} IS NOT NULL),
              (array_agg(e.id ORDER BY e.id) FILTER (WHERE e.{stage} IS NULL
                 AND l.status IS NULL AND e.{lower} IS NOT NULL))[1:5],
              count(*) FILTER (WHERE e.{stage} IS NOT NULL AND (r.id IS NULL
                 OR r.status <> 'succeeded' OR r.process <> %(p)s OR r.stage <> %(s)s)),
              (array_agg(e.id ORDER BY e.id) FILTER (WHERE e.{stage} IS NOT NULL AND (r.id IS NULL
                 OR r.status <> 'succeeded' OR r.process <> %(p)s OR r.stage <> %(s)s)))[1:5],
              count(*) FILTER (WHERE e.{stage} IS NULL AND l.status = 'succeeded')
            FROM evidence_evidence e
            LEFT JOIN last l ON l.evidence_id = e.id
            LEFT JOIN orchestration_llmrequest r ON r.id = e.{level}_request_id
            WHERE e.window_run_id = %(wr)s
            """,
            {"p": process, "s": stage, "wr": window_run.pk, "pat": _KEY_WITH_ID},
        )
        total, done, exhausted, blocked, open_n, lost, lost_ex, bad, bad_ex, s_no_art = row
        stages[stage] = {
            "total": total,
            "artifacts": done,
            "exhausted": exhausted,
            "blocked": blocked,
            "open": open_n,
            "lost": lost,
        }
        c.add("lost_target", f"{stage}: evidence with neither content nor attempt", lost, lost_ex)
        if terminal:
            c.add("target_not_final", f"{stage}: evidence still pending in a terminal run", open_n)
        c.add(
            "artifact_request_mismatch",
            f"{stage}: {level}_request_id is not a succeeded attempt of this stage",
            bad,
            bad_ex,
        )
        c.add(
            "succeeded_without_artifact",
            f"{stage}: last attempt succeeded but the column is empty",
            s_no_art,
        )
    c.stats["stages"] = stages
    for event_type in ("stage_advanced", "stage_materialized"):
        repeated = _all(
            "SELECT stage, count(*) FROM orchestration_runevent WHERE process = %s "
            "AND event_type = %s GROUP BY stage HAVING count(*) > 1",
            [process, event_type],
        )
        c.add(
            f"{event_type}_count",
            f"{event_type} more than once for a stage",
            len(repeated),
            [stage for stage, _ in repeated],
        )
    terminal_events = _one(
        "SELECT count(*) FROM orchestration_runevent WHERE process = %s AND event_type = ANY(%s)",
        [process, ["window_run_completed", "window_run_failed", "window_run_canceled"]],
    )[0]  # fmt: skip
    if terminal_events > 1:
        c.add("ledger_terminal_event", f"{terminal_events} terminal events", terminal_events - 1)
    _batch_checks(c, process)
    _submission_checks(c, process, submissions, complete=submissions_complete)
    return c.report(f"window run {window_run.pk}")


# --- the simulator's submission log --------------------------------------------------------------


def fetch_submissions(
    simulator_url: str, *, full: bool = False, timeout: float = 60.0
) -> dict[str, int]:
    """Submission counts from the simulator: only duplicated keys, or (``full``) every key.

    The summary is O(duplicates) and enough for invariant 4; the full log (streamed JSONL)
    also lets the verifier find results the provider never accepted.
    """
    base = simulator_url.rstrip("/")
    if not full:
        with urllib.request.urlopen(f"{base}/_sim/submissions?summary=1", timeout=timeout) as resp:  # noqa: S310
            summary = json.loads(resp.read())
        return {str(k): int(v) for k, v in (summary.get("duplicates") or {}).items()}
    counts: dict[str, int] = {}
    with urllib.request.urlopen(f"{base}/_sim/submissions", timeout=timeout) as resp:  # noqa: S310
        for line in resp:
            if line.strip():
                key = str(json.loads(line)["key"])
                counts[key] = counts.get(key, 0) + 1
    return counts
