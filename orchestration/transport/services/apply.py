"""Apply provider outcomes to attempt rows, in bulk, idempotently (ARCHITECTURE.md 4-5).

One chunk (up to ~1,000 rows) is one transaction:

1. claim the chunk's attempt rows that are still ``in_flight`` for this batch/lease (rows that
   were already applied, canceled, or never ours are skipped: redelivery and re-streaming a
   result file are therefore harmless);
2. hand successful outputs to the domain handlers (artifacts written with unique
   constraints); collect their rejections (parse failures);
3. mark succeeded/failed rows with ``UPDATE ... FROM unnest`` (conditional on
   ``status = 'in_flight'``). On PostgreSQL steps 1 and 3 are one statement: the UPDATE marks
   each row by its provider outcome and returns what the handlers need, which also takes the
   row locks; rows a handler rejects are then flipped to ``failed`` in the same transaction,
   so no reader ever sees the intermediate state. This halves the statements and removes the
   ``SELECT ... FOR UPDATE`` pass, whose tuple locks cost as much WAL as the update itself;
4. for each failed row, insert attempt ``n+1`` (``INSERT ... SELECT`` copying the prompt in
   SQL, ``ON CONFLICT DO NOTHING``) with exponential backoff and jitter, or report the key as
   exhausted when attempts are used up or the error is permanent;
5. append failure events to the ledger in the same transaction, so it cannot disagree.

Nothing here does network I/O.
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.db import connection, transaction
from django.utils import timezone

from orchestration.models import LlmRequest, RequestStatus, RunEvent
from orchestration.transport import registry
from orchestration.transport.providers.base import (
    RETRYABLE_CLASSES,
    ErrorClass,
    ResultRow,
    request_pk_from_custom_id,
)
from orchestration.transport.sql import bound_cursor, is_postgres, pg_array, update_from_rows

logger = logging.getLogger(__name__)

DEFAULT_BACKOFF_S = 60.0
DEFAULT_JITTER = 0.2
#: A provider 429 says "not now", not "this request is bad": it does not count against the
#: key's ``max_attempts``. Each 429 still ends its attempt (a new row, append-only), and the
#: retry row carries ``max_attempts + 1``, up to this many extensions per key (a request's
#: ``params["rate_limit_retries"]`` overrides it), so a long 429 storm cannot retry forever.
DEFAULT_RATE_LIMIT_RETRIES = 10
MAX_BACKOFF_S = 3600.0


@dataclass(slots=True)
class Outcome:
    """A request's outcome to apply; built from a provider ResultRow or a local failure."""

    request_id: int
    ok: bool
    output_text: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    error_class: str = ""
    error_message: str = ""
    retry_after: float | None = None
    route_hint: str | None = None  # force the next attempt's route (batch -> direct fallback)


@dataclass(slots=True)
class ApplyStats:
    applied: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    exhausted: int = 0
    skipped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    processes: set[str] = field(default_factory=set)

    def merge(self, other: ApplyStats) -> None:
        self.applied += other.applied
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retried += other.retried
        self.exhausted += other.exhausted
        self.skipped += other.skipped
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.processes |= other.processes


def _clean_text(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a provider that sends one must not break the apply."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")


def _sanitize(outcome: Outcome) -> None:
    outcome.output_text = _clean_text(outcome.output_text)
    outcome.error_message = _clean_text(outcome.error_message) or ""


def outcome_from_row(row: ResultRow) -> Outcome | None:
    request_id = request_pk_from_custom_id(row.custom_id)
    if request_id is None:
        return None
    if row.ok:
        return Outcome(
            request_id=request_id,
            ok=True,
            output_text=row.output_text or "",
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
        )
    return Outcome(
        request_id=request_id,
        ok=False,
        output_text=row.raw,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        error_class=(row.error_class or ErrorClass.UNKNOWN).value,
        error_message=row.error_message or "provider returned an error row",
    )


def backoff_seconds(
    *, attempt_index: int, base: float, jitter: float, retry_after: float | None
) -> float:
    """Exponential backoff ``base * 2^(attempt-1)`` with +/- jitter, never below retry_after."""
    delay = float(min(base * (2 ** max(attempt_index - 1, 0)), MAX_BACKOFF_S))
    if jitter > 0:
        delay *= 1 + random.uniform(-jitter, jitter)
    if retry_after is not None:
        delay = max(delay, float(retry_after))
    return float(max(delay, 0.0))


#: Price fields in a request's params, with the value used when absent or not a JSON number.
#: ``_cost`` and ``_COST_SQL`` must agree (tests/transport/test_apply_sql.py checks it).
_PRICE_DEFAULTS = {"input_price_per_mtok": 0.0, "output_price_per_mtok": 0.0, "batch_discount": 0.5}


def _price(params: dict[str, object], name: str) -> float:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return _PRICE_DEFAULTS[name]
    return float(value)


def _cost(params: dict[str, object], in_tok: int, out_tok: int, batch: bool) -> float:
    factor = (1.0 - _price(params, "batch_discount")) if batch else 1.0
    return (
        factor
        * (
            in_tok * _price(params, "input_price_per_mtok")
            + out_tok * _price(params, "output_price_per_mtok")
        )
        / 1_000_000
    )


def _price_sql(name: str) -> str:
    return (
        f"(CASE WHEN jsonb_typeof(t.params->'{name}') = 'number' "
        f"THEN (t.params->>'{name}')::float8 ELSE {_PRICE_DEFAULTS[name]} END)"
    )


_COST_SQL = (
    f"(CASE WHEN t.route = 'batch' THEN 1.0 - {_price_sql('batch_discount')} ELSE 1.0 END) * "
    f"(v.input_tokens * {_price_sql('input_price_per_mtok')} "
    f"+ v.output_tokens * {_price_sql('output_price_per_mtok')}) / 1000000.0"
)

#: (id, custom_key, attempt_index, process, stage, max_attempts, params, route, cost_usd)
_Meta = tuple[int, str, int, str, str, int, dict[str, Any] | None, str | None, float]


def _claim_and_mark_pg(
    by_id: dict[int, Outcome], *, batch_id: int | None, lease_owner: str | None, now: datetime
) -> dict[int, _Meta]:
    """PostgreSQL: mark every still-ours row by its provider outcome in one UPDATE.

    Returns the rows it marked (skipped ones are absent), with what handlers and retries need.
    """
    ids: list[int] = []
    oks: list[bool] = []
    outputs: list[str | None] = []
    in_toks: list[int] = []
    out_toks: list[int] = []
    classes: list[str] = []
    messages: list[str] = []
    for rid, outcome in by_id.items():
        ids.append(rid)
        oks.append(outcome.ok)
        outputs.append(outcome.output_text)
        in_toks.append(outcome.input_tokens)
        out_toks.append(outcome.output_tokens)
        classes.append("" if outcome.ok else outcome.error_class or ErrorClass.UNKNOWN.value)
        messages.append("" if outcome.ok else outcome.error_message[:20000])
    extra = ""
    args: list[Any] = [
        now,
        *(pg_array(column) for column in (ids, oks, outputs, in_toks, out_toks, classes, messages)),
    ]
    if batch_id is not None:
        extra += " AND t.batch_id = %s"
        args.append(batch_id)
    if lease_owner is not None:
        extra += " AND t.lease_owner = %s"
        args.append(lease_owner)
    sql = (
        "UPDATE orchestration_llmrequest AS t SET "
        "status = CASE WHEN v.ok THEN 'succeeded' ELSE 'failed' END, "
        "output_text = v.output_text, input_tokens = v.input_tokens, "
        f"output_tokens = v.output_tokens, cost_usd = {_COST_SQL}, "
        "error_class = v.error_class, error_message = v.error_message, completed_at = %s "
        "FROM unnest(%s::bigint[], %s::boolean[], %s::text[], %s::integer[], %s::integer[], "
        "%s::text[], %s::text[]) AS v(id, ok, output_text, input_tokens, output_tokens, "
        "error_class, error_message) "
        f"WHERE t.id = v.id AND t.status = 'in_flight'{extra} "
        "RETURNING t.id, t.custom_key, t.attempt_index, t.process, t.stage, t.max_attempts, "
        "CASE WHEN v.ok THEN NULL ELSE t.params END, t.route, t.cost_usd"
    )
    with bound_cursor() as cursor:
        cursor.execute(sql, args)
        return {row[0]: (*row[:6], _json(row[6]), *row[7:]) for row in cursor.fetchall()}


def _json(value: object) -> dict[str, Any] | None:
    """jsonb from a raw cursor: Django's PostgreSQL backend loads it as text, not a dict."""
    if value is None or isinstance(value, dict):
        return value
    loaded = orjson.loads(value) if isinstance(value, str | bytes) else None
    return loaded if isinstance(loaded, dict) else None


def _reject_pg(rejected: list[tuple[int, str, str]]) -> dict[int, dict[str, Any] | None]:
    """Flip rows a handler rejected from succeeded to failed; returns their params."""
    with bound_cursor() as cursor:
        cursor.execute(
            "UPDATE orchestration_llmrequest AS t SET status = 'failed', "
            "error_class = v.error_class, error_message = v.error_message "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, error_class, "
            "error_message) WHERE t.id = v.id AND t.status = 'succeeded' "
            "RETURNING t.id, t.params",
            [
                pg_array(r[0] for r in rejected),
                pg_array(r[1] for r in rejected),
                pg_array(r[2] for r in rejected),
            ],
        )
        return {row[0]: _json(row[1]) for row in cursor.fetchall()}


def _select_for_update(
    by_id: dict[int, Outcome], *, batch_id: int | None, lease_owner: str | None
) -> dict[int, _Meta]:
    """Portable path (SQLite): lock the still-ours rows; they are marked after the handlers."""
    qs = LlmRequest.objects.filter(pk__in=list(by_id), status=RequestStatus.IN_FLIGHT)
    if batch_id is not None:
        qs = qs.filter(batch_id=batch_id)
    if lease_owner is not None:
        qs = qs.filter(lease_owner=lease_owner)
    rows = qs.select_for_update().values_list(
        "id", "custom_key", "attempt_index", "process", "stage", "max_attempts", "params", "route"
    )
    return {r[0]: (*r, 0.0) for r in rows}


def outcomes_apply(
    *,
    outcomes: Sequence[Outcome],
    batch_id: int | None = None,
    lease_owner: str | None = None,
    task_id: str = "",
) -> ApplyStats:
    """Apply one chunk of outcomes in one transaction (see module docstring)."""
    stats = ApplyStats()
    if not outcomes:
        return stats
    by_id: dict[int, Outcome] = {}
    for outcome in outcomes:
        _sanitize(outcome)
        # Duplicate result rows for one id: the first wins (the rest are counted as skipped).
        if outcome.request_id in by_id:
            stats.skipped += 1
            continue
        by_id[outcome.request_id] = outcome
    now = timezone.now()
    with transaction.atomic():
        premarked = is_postgres()
        if premarked:
            meta = _claim_and_mark_pg(by_id, batch_id=batch_id, lease_owner=lease_owner, now=now)
        else:
            meta = _select_for_update(by_id, batch_id=batch_id, lease_owner=lease_owner)
        stats.skipped += len(by_id) - len(meta)

        # 2. Domain handlers, grouped by key prefix, one call per prefix.
        rejections: dict[int, registry.Rejection] = {}
        groups: dict[str, list[registry.AppliedResult]] = defaultdict(list)
        for rid, (_, key, attempt, process, stage, *_rest) in meta.items():
            outcome = by_id[rid]
            if outcome.ok:
                groups[registry.key_prefix(key)].append(
                    registry.AppliedResult(
                        request_id=rid,
                        custom_key=key,
                        attempt_index=attempt,
                        process=process,
                        stage=stage,
                        output_text=outcome.output_text or "",
                    )
                )
        for results in groups.values():
            handler = registry.handler_for(results[0].custom_key)
            rejections.update(handler.apply(results))

        # 3. Mark attempts (on PostgreSQL only the rejected ones are left to flip).
        updates: list[tuple[object, ...]] = []
        failures: list[tuple[int, Outcome]] = []
        for rid, (_, _key, _att, process, _stage, _max, params, route, cost) in meta.items():
            outcome = by_id[rid]
            rejection = rejections.get(rid)
            in_tok, out_tok = outcome.input_tokens, outcome.output_tokens
            if not premarked:
                cost = _cost(params or {}, in_tok, out_tok, batch=route == "batch")
            stats.input_tokens += in_tok
            stats.output_tokens += out_tok
            stats.cost_usd += cost
            stats.processes.add(process)
            if outcome.ok and rejection is None:
                updates.append(
                    (rid, "succeeded", outcome.output_text, in_tok, out_tok, cost, "", "", now)
                )
                stats.succeeded += 1
                continue
            if rejection is not None:
                outcome.error_class = rejection.error_class
                outcome.error_message = rejection.message
            updates.append(
                (
                    rid,
                    "failed",
                    outcome.output_text,
                    in_tok,
                    out_tok,
                    cost,
                    outcome.error_class or ErrorClass.UNKNOWN.value,
                    outcome.error_message[:20000],
                    now,
                )
            )
            failures.append((rid, outcome))
            stats.failed += 1
        if premarked:
            rejected = [
                (rid, by_id[rid].error_class, by_id[rid].error_message[:20000])
                for rid in rejections
                if rid in meta
            ]
            if rejected:
                for rid, params in _reject_pg(rejected).items():
                    meta[rid] = (*meta[rid][:6], params, *meta[rid][7:])
        else:
            update_from_rows(
                table="orchestration_llmrequest",
                columns=[
                    ("id", "bigint"),
                    ("status", "text"),
                    ("output_text", "text"),
                    ("input_tokens", "integer"),
                    ("output_tokens", "integer"),
                    ("cost_usd", "double precision"),
                    ("error_class", "text"),
                    ("error_message", "text"),
                    ("completed_at", "timestamptz"),
                ],
                rows=updates,
                where="t.status = 'in_flight'",
                returning_ids=False,
            )
        stats.applied = len(updates)

        # 4. Retries and exhaustion.
        retry_ids: list[int] = []
        retry_due: list[datetime] = []
        retry_hints: list[str | None] = []
        retry_extend: list[bool] = []
        exhausted: list[registry.ExhaustedKey] = []
        events: list[RunEvent] = []
        first_max = _first_attempt_max(
            [meta[rid][1] for rid, o in failures if o.error_class == ErrorClass.RATE_LIMIT.value]
        )
        for rid, outcome in failures:
            _, key, attempt, process, stage, max_attempts, params, _route, _cost_usd = meta[rid]
            p = params or {}
            retryable = outcome.error_class in {c.value for c in RETRYABLE_CLASSES}
            # A 429 does not use up an attempt while the key has extensions left.
            extend = outcome.error_class == ErrorClass.RATE_LIMIT.value and (
                max_attempts - first_max.get(key, max_attempts)
                < int(p.get("rate_limit_retries", DEFAULT_RATE_LIMIT_RETRIES))
            )
            if retryable and (attempt < max_attempts or extend):
                delay = backoff_seconds(
                    attempt_index=attempt,
                    base=float(p.get("backoff_s", DEFAULT_BACKOFF_S)),
                    jitter=float(p.get("jitter", DEFAULT_JITTER)),
                    retry_after=outcome.retry_after,
                )
                retry_ids.append(rid)
                retry_due.append(now + timedelta(seconds=delay))
                retry_hints.append(outcome.route_hint)
                retry_extend.append(extend)
                event_type = "request_retry_scheduled"
            else:
                exhausted.append(
                    registry.ExhaustedKey(
                        custom_key=key,
                        process=process,
                        stage=stage,
                        error_class=outcome.error_class,
                        message=outcome.error_message,
                    )
                )
                event_type = "request_exhausted"
            events.append(
                RunEvent(
                    process=process,
                    stage=stage,
                    event_type=event_type,
                    custom_key=key,
                    batch_id=batch_id,
                    task_id=task_id,
                    payload={
                        "attempt": attempt,
                        "error_class": outcome.error_class,
                        "error": outcome.error_message[:500],
                        **({"attempt_not_counted": True} if extend else {}),
                    },
                )
            )
        if retry_ids:
            stats.retried += requests_retry_insert(
                ids=retry_ids, due=retry_due, route_hints=retry_hints, extend=retry_extend
            )
        if exhausted:
            stats.exhausted += len(exhausted)
            by_prefix: dict[str, list[registry.ExhaustedKey]] = defaultdict(list)
            for item in exhausted:
                by_prefix[registry.key_prefix(item.custom_key)].append(item)
            for items in by_prefix.values():
                registry.handler_for(items[0].custom_key).exhausted(items)
        if events:
            RunEvent.objects.bulk_create(events, batch_size=1000)
        processes = set(stats.processes)
        transaction.on_commit(lambda: registry.notify_processes(processes))
    return stats


def _first_attempt_max(keys: Sequence[str]) -> dict[str, int]:
    """``max_attempts`` of each key's first attempt: its limit before any 429 extension.

    Only rate-limited failures need it, so a chunk without 429s runs no query.
    """
    if not keys:
        return {}
    unique = sorted(set(keys))
    if is_postgres():
        with bound_cursor() as cursor:
            cursor.execute(
                "SELECT custom_key, max_attempts FROM orchestration_llmrequest "
                "WHERE custom_key = ANY(%s::text[]) AND attempt_index = 1",
                [pg_array(unique)],
            )
            return dict(cursor.fetchall())
    rows = LlmRequest.objects.filter(custom_key__in=unique, attempt_index=1)
    return dict(rows.values_list("custom_key", "max_attempts"))


def requests_retry_insert(
    *,
    ids: Sequence[int],
    due: Sequence[datetime],
    route_hints: Sequence[str | None],
    extend: Sequence[bool] | None = None,
) -> int:
    """Insert attempt n+1 for each failed attempt row in ``ids`` (copying prompts in SQL).

    ``extend[i]`` gives the new attempt ``max_attempts + 1`` (the failure was a 429, which
    does not count against the limit). ``ON CONFLICT DO NOTHING`` makes a duplicate retry (a
    redelivered finalize) a no-op.
    """
    if not ids:
        return 0
    flags = list(extend) if extend is not None else [False] * len(ids)
    cols_copy = (
        "custom_key, process, stage, provider, model, provider_model, system_prompt_id, "
        "user_prompt, params, prompt_version, est_input_tokens, batchable"
    )
    if is_postgres():
        with bound_cursor() as cursor:
            cursor.execute(
                f"INSERT INTO orchestration_llmrequest ({cols_copy}, max_attempts, "
                "attempt_index, status, route_hint, error_class, error_message, "
                "next_attempt_at, created_at) "
                f"SELECT {', '.join('r.' + c.strip() for c in cols_copy.split(','))}, "
                "r.max_attempts + CASE WHEN v.extend THEN 1 ELSE 0 END, "
                "r.attempt_index + 1, 'pending', COALESCE(v.hint, r.route_hint), '', '', "
                "v.due, now() FROM orchestration_llmrequest r "
                "JOIN unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::boolean[]) "
                "AS v(id, due, hint, extend) "
                "ON r.id = v.id ON CONFLICT (custom_key, attempt_index) DO NOTHING",
                [pg_array(ids), pg_array(due), pg_array(route_hints), pg_array(flags)],
            )
            return int(cursor.rowcount)
    with connection.cursor() as cursor:
        inserted = 0
        for rid, when, hint, more in zip(ids, due, route_hints, flags, strict=True):
            cursor.execute(
                f"INSERT OR IGNORE INTO orchestration_llmrequest ({cols_copy}, max_attempts, "
                "attempt_index, status, route_hint, error_class, error_message, "
                "next_attempt_at, created_at) "
                f"SELECT {cols_copy}, max_attempts + %s, attempt_index + 1, 'pending', "
                "COALESCE(%s, route_hint), '', '', %s, %s FROM orchestration_llmrequest "
                "WHERE id = %s",
                [1 if more else 0, hint, when, timezone.now(), rid],
            )
            inserted += cursor.rowcount
        return inserted


def local_failures(
    *,
    request_ids: Iterable[int],
    error_class: ErrorClass,
    message: str,
    retry_after: float | None = None,
    route_hint: str | None = None,
) -> list[Outcome]:
    """Outcomes for requests that failed without a provider row (batch failed, missing...)."""
    return [
        Outcome(
            request_id=rid,
            ok=False,
            error_class=error_class.value,
            error_message=message,
            retry_after=retry_after,
            route_hint=route_hint,
        )
        for rid in request_ids
    ]
