"""Bulk, idempotent request materialization (ARCHITECTURE.md 4, step 3).

``llm_requests_enqueue`` inserts attempt-1 rows for many custom keys in one statement with
``ON CONFLICT (custom_key, attempt_index) DO NOTHING``: enqueueing the same stage twice (a
duplicated advance message, a racing tick) is a no-op enforced by the database, not by a
check-then-insert. On PostgreSQL rows go through COPY into a temp table (PROOF.md: COPY is
~5x ``bulk_create``), so a 10^6-request stage materializes in seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from orchestration.models import LlmRequest, PromptTemplate, RequestStatus
from orchestration.transport.sql import is_postgres


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """Everything needed to create attempt 1 of one LLM call."""

    custom_key: str
    process: str
    stage: str
    provider: str
    model: str
    provider_model: str
    user_prompt: str
    system_prompt: str | None = None
    prompt_version: str = ""
    max_output_tokens: int = 8000
    max_attempts: int = 3
    batchable: bool = True
    route_hint: str = "auto"  # auto | batch | direct
    params: dict[str, Any] = field(default_factory=dict)  # prices, temperature, backoff


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    requested: int
    inserted: int

    @property
    def existing(self) -> int:
        return self.requested - self.inserted


def estimate_tokens(text: str | None) -> int:
    """Characters / 4, like the original; used for reservations before real usage is known."""
    return (len(text) + 3) // 4 if text else 0


def prompt_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def prompt_templates_ensure(contents: Iterable[str]) -> dict[str, int]:
    """Return ``{content: template_id}``, inserting unseen system prompts once.

    Dedup by SHA-256 (the original used FNV-1a and compared content on hash hits; a 256-bit
    hash makes that second check unnecessary).
    """
    by_hash = {prompt_hash(c): c for c in set(contents)}
    if not by_hash:
        return {}
    PromptTemplate.objects.bulk_create(
        [PromptTemplate(content_hash=h, content=c) for h, c in by_hash.items()],
        ignore_conflicts=True,
        batch_size=1000,
    )
    ids = dict(
        PromptTemplate.objects.filter(content_hash__in=list(by_hash)).values_list(
            "content_hash", "id"
        )
    )
    return {content: ids[h] for h, content in by_hash.items()}


_COLUMNS = (
    "custom_key",
    "attempt_index",
    "process",
    "stage",
    "status",
    "route_hint",
    "batchable",
    "provider",
    "model",
    "provider_model",
    "system_prompt_id",
    "user_prompt",
    "params",
    "prompt_version",
    "max_attempts",
    "est_input_tokens",
    "error_class",
    "error_message",
    "next_attempt_at",
    "created_at",
)


def _row(spec: RequestSpec, system_id: int | None, now: Any) -> tuple[Any, ...]:
    params = {"max_output_tokens": spec.max_output_tokens, **spec.params}
    est = estimate_tokens(spec.user_prompt) + estimate_tokens(spec.system_prompt)
    return (
        spec.custom_key,
        1,
        spec.process,
        spec.stage,
        RequestStatus.PENDING.value,
        spec.route_hint,
        spec.batchable,
        spec.provider,
        spec.model,
        spec.provider_model,
        system_id,
        spec.user_prompt,
        params,
        spec.prompt_version,
        spec.max_attempts,
        est,
        "",
        "",
        now,
        now,
    )


def llm_requests_enqueue(*, specs: Sequence[RequestSpec]) -> EnqueueResult:
    """Insert attempt 1 for each spec unless its key already has one. Returns counts.

    Must be called inside the caller's transaction when the rows belong with other writes
    (e.g. a stage being materialized); it opens its own atomic block otherwise.
    """
    if not specs:
        return EnqueueResult(requested=0, inserted=0)
    for spec in specs:
        if spec.route_hint not in {"auto", "batch", "direct"}:
            raise ValueError(f"route_hint {spec.route_hint!r} must be auto, batch or direct")
    now = timezone.now()
    with transaction.atomic():
        systems = prompt_templates_ensure(s.system_prompt for s in specs if s.system_prompt)
        rows = [_row(s, systems[s.system_prompt] if s.system_prompt else None, now) for s in specs]
        inserted = _insert_pg(rows) if is_postgres() else _insert_portable(rows)
    return EnqueueResult(requested=len(specs), inserted=inserted)


def _insert_pg(rows: list[tuple[Any, ...]]) -> int:
    """COPY straight into the table; on a duplicate identity, fall back to the idempotent path.

    The first materialization of a stage (the normal case) never conflicts, and COPY into
    the table writes each row once instead of twice (temp table, then INSERT ... SELECT):
    ~25% faster at 10^6 rows. A repeat (duplicated advance, racing tick) hits the unique
    index, the savepoint rolls the partial COPY back, and the temp-table path inserts only
    what is missing. A concurrent enqueue of the same keys blocks on the index until the
    other commits, then takes the same fallback.
    """
    try:
        with transaction.atomic():
            return _copy_direct(rows)
    except IntegrityError:
        return _insert_on_conflict(rows)


def _copy_rows(copy: Any, rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        copy.write_row([orjson.dumps(v).decode() if isinstance(v, dict) else v for v in row])


def _copy_direct(rows: list[tuple[Any, ...]]) -> int:
    cols = ", ".join(_COLUMNS)
    with connection.cursor() as cursor:
        try:
            with cursor.cursor.copy(f"COPY orchestration_llmrequest ({cols}) FROM STDIN") as copy:
                _copy_rows(copy, rows)
        except psycopg.errors.UniqueViolation as exc:
            raise IntegrityError(str(exc)) from exc
    return len(rows)


def _insert_on_conflict(rows: list[tuple[Any, ...]]) -> int:
    cols = ", ".join(_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS tmp_llmrequest_enqueue "
            "(LIKE orchestration_llmrequest INCLUDING DEFAULTS EXCLUDING IDENTITY) "
            "ON COMMIT DELETE ROWS"
        )
        cursor.execute("ALTER TABLE tmp_llmrequest_enqueue ALTER COLUMN id DROP NOT NULL")
        raw = cursor.cursor  # the psycopg cursor, for COPY
        with raw.copy(f"COPY tmp_llmrequest_enqueue ({cols}) FROM STDIN") as copy:
            _copy_rows(copy, rows)
        cursor.execute(
            f"INSERT INTO orchestration_llmrequest ({cols}) "
            f"SELECT {cols} FROM tmp_llmrequest_enqueue "
            "ON CONFLICT (custom_key, attempt_index) DO NOTHING"
        )
        inserted = cursor.rowcount
        cursor.execute("TRUNCATE tmp_llmrequest_enqueue")
    return int(inserted)


def _insert_portable(rows: list[tuple[Any, ...]]) -> int:
    before = LlmRequest.objects.count()
    objs = [LlmRequest(**dict(zip(_COLUMNS, row, strict=True))) for row in rows]
    LlmRequest.objects.bulk_create(objs, ignore_conflicts=True, batch_size=500)
    return LlmRequest.objects.count() - before
