"""Windows: definition, collection (search -> evidence), control, reconciliation.

Flow of one window run (DOMAIN.md 3.1, with the temporal branch's explicit collect stage):

1. ``window_create`` stores the definition (query, country, dates, model, limit, target stage,
   sandbox settings). End date before start date is refused with a fix.
2. ``window_collect(tag)`` is the idempotent entry point: under the window's row lock it
   returns the active window run if there is one (never a second: a partial unique index
   backs the lock), otherwise creates a ``queued`` run with the frozen policy and sandbox and,
   after commit, sends the per-window chain ``evidence.window_collect`` ->
   ``evidence.window_advance``.
3. ``window_run_collect`` (the chain's first task) claims the run with a conditional UPDATE on
   its collect lease, searches **outside any transaction**, then in one transaction drops
   unusable hits (missing url/title/markdown, refused by the sandbox, duplicate URL; counted
   in ``dropped_count``), inserts evidence with ``ON CONFLICT DO NOTHING`` on
   ``(window_run, url)`` and moves the run on: zero evidence -> ``completed`` with zero
   counts; otherwise ``running`` at ``l0_raw``, which ``window_advance`` (the chain's second
   task) turns into the first transform stage. A search failure (after one retry for
   transient kinds) -> ``failed`` with the provider's (scrubbed) message in ``last_error``.
4. The database is the barrier: ``windows_reconcile`` (every tick, throttled) re-sends the
   chain for queued runs whose collect lease is free or expired and ``window_advance`` for
   running runs, so a lost message delays a window by one reconcile interval, never more.

Pause/resume/cancel mirror the judging side: a ``TransportHold`` on ``window:<id>`` stops
routing of its pending requests; work in flight finishes and is applied.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from configs_app.preflight import PROVIDER_KEYS, preflight_check
from configs_app.registry import DEFAULT_MODELS
from evidence.models import (
    Evidence,
    EvidenceView,
    Window,
    WindowRun,
    WindowRunStatus,
)
from evidence.search import SearchError, SearchHit, search_adapter_get
from evidence.search.sandbox import (
    MAX_TITLE_CHARS,
    Sandbox,
    SandboxConfigError,
    normalize_domains,
)
from evidence.selectors import VIEW_ORDER
from evidence.services.advance import window_event, windows_advance_enqueue
from evidence.services.errors import (
    EvidenceConflict,
    EvidenceInvalid,
    EvidenceInvalidState,
    EvidenceNotFound,
)
from orchestration.models import (
    BatchStatus,
    LlmBatch,
    LlmRequest,
    RequestStatus,
    TransportHold,
)
from policies.resolver import policy_resolve

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (WindowRunStatus.QUEUED, WindowRunStatus.RUNNING, WindowRunStatus.PAUSED)
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_EVIDENCE_LIMIT = 100  # Firecrawl's search limit
SEARCH_ATTEMPTS = 2  # the temporal branch's collect stage: 2 attempts
SEARCH_RETRY_DELAY_S = 1.0
MAX_COLLECT_CLAIMS = 3  # collect leases taken without finishing (workers lost) before failing
COLLECT_LEASE_SLACK_S = 60.0
RECONCILE_EVERY_S = 10.0


# ---------------------------------------------------------------------------------------------
# Definition
# ---------------------------------------------------------------------------------------------


def _date(value: dt.date | str, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise EvidenceInvalid(
            f"{name} {value!r} is not a date", fix="use YYYY-MM-DD, e.g. 2026-01-31"
        ) from exc


def window_create(
    *,
    tag: str,
    query: str,
    country: str,
    start_date: dt.date | str,
    end_date: dt.date | str,
    model: str = "gpt-4.1-mini",
    evidence_limit: int = 20,
    target_stage: str = EvidenceView.L3_ABSTRACTED,
    allowed_domains: list[str] | None = None,
    search_timeout_s: float | None = None,
) -> Window:
    """Store a window definition. Every problem is an ``EvidenceInvalid`` naming the fix."""
    if not TAG_RE.match(tag or ""):
        raise EvidenceInvalid(
            f"window tag {tag!r} is not a slug",
            fix="use lowercase letters, digits, '-' and '_' (max 100 characters)",
        )
    if tag.isdigit():
        raise EvidenceInvalid(
            f"window tag {tag!r} is all digits",
            fix="add a letter: commands read an all-digit reference as a window run id",
        )
    if not (query or "").strip():
        raise EvidenceInvalid("query is empty", fix="pass the search query, e.g. 'fascism'")
    if not (country or "").strip():
        raise EvidenceInvalid("country is empty", fix="pass a country, e.g. 'Hungary'")
    start, end = _date(start_date, "start_date"), _date(end_date, "end_date")
    if end < start:
        raise EvidenceInvalid(
            f"end_date {end} is before start_date {start}",
            fix="pass an end date on or after the start date",
        )
    if model not in DEFAULT_MODELS:
        raise EvidenceInvalid(
            f"unknown model {model!r}", fix=f"use one of {', '.join(sorted(DEFAULT_MODELS))}"
        )
    if not 1 <= int(evidence_limit) <= MAX_EVIDENCE_LIMIT:
        raise EvidenceInvalid(
            f"evidence_limit {evidence_limit} is out of range",
            fix=f"use 1..{MAX_EVIDENCE_LIMIT} (the search provider's per-query limit)",
        )
    if target_stage not in VIEW_ORDER:
        raise EvidenceInvalid(
            f"unknown target stage {target_stage!r}", fix=f"use one of {', '.join(VIEW_ORDER)}"
        )
    try:
        domains = list(normalize_domains(allowed_domains))
        Sandbox.build(allowed_domains=domains, timeout_s=search_timeout_s)
    except SandboxConfigError as exc:
        raise EvidenceInvalid(str(exc), fix="fix the allowlist or timeout") from exc
    try:
        with transaction.atomic():
            return Window.objects.create(
                tag=tag,
                query=query.strip(),
                country=country.strip(),
                start_date=start,
                end_date=end,
                model=model,
                evidence_limit=int(evidence_limit),
                target_stage=target_stage,
                allowed_domains=[] if domains == ["*"] else domains,
                search_timeout_s=search_timeout_s,
            )
    except IntegrityError as exc:
        raise EvidenceConflict(
            f"window tag {tag!r} already exists",
            fix=f"collect it with `manage.py windows collect {tag}`, or choose another tag",
        ) from exc


def window_get(*, tag: str) -> Window:
    window = Window.objects.filter(tag=tag).first()
    if window is None:
        raise EvidenceNotFound(
            f"window {tag!r} does not exist", fix="create it with `manage.py windows create`"
        )
    return window


def window_run_resolve(*, ref: str | int) -> WindowRun:
    """A window run by id, or the latest run of a window tag."""
    text = str(ref).strip()
    qs = WindowRun.objects.select_related("window")
    run = (
        qs.filter(pk=int(text)).first()
        if text.isdigit()
        else qs.filter(window__tag=text).order_by("-pk").first()
    )
    if run is None:
        if not text.isdigit() and Window.objects.filter(tag=text).exists():
            raise EvidenceNotFound(
                f"window {text!r} has not been collected yet",
                fix=f"run `manage.py windows collect {text}`",
            )
        raise EvidenceNotFound(
            f"no window run found for {text!r}", fix="pass a window run id or a window tag"
        )
    return run


# ---------------------------------------------------------------------------------------------
# Collection entry point
# ---------------------------------------------------------------------------------------------


def search_timeout_default() -> float:
    return float(getattr(settings, "JUDGE_SEARCH_TIMEOUT_S", 45.0))


def _preflight(window: Window) -> None:
    required = ["FIRECRAWL_API_KEY"]
    if window.target_stage != EvidenceView.L0_RAW:
        required.append(PROVIDER_KEYS[DEFAULT_MODELS[window.model].provider])
    result = preflight_check(required)
    if result.missing:
        raise EvidenceInvalidState(
            "preflight failed: " + "; ".join(f"{m.name}: {m.reason}" for m in result.missing),
            fix="; ".join(sorted({m.fix for m in result.missing})),
        )


def _collect_chain_send(window_run_id: int) -> None:
    """The per-window chain: collect, then advance (each idempotent; the DB is the barrier)."""
    from celery import chain

    from evidence import tasks

    chain(
        tasks.window_collect.si(window_run_id=window_run_id),
        tasks.window_advance.si(window_run_id=window_run_id),
    ).apply_async()


def window_collect(*, tag: str) -> WindowRun:
    """Start collecting ``tag``, or return its active window run (never a second one)."""
    window = window_get(tag=tag)
    active = WindowRun.objects.filter(window=window, status__in=ACTIVE_STATUSES).first()
    if active is not None:
        return active
    _preflight(window)
    try:
        with transaction.atomic():
            Window.objects.select_for_update().filter(pk=window.pk).first()
            active = WindowRun.objects.filter(window=window, status__in=ACTIVE_STATUSES).first()
            if active is not None:
                return active
            sandbox = Sandbox.build(
                allowed_domains=window.allowed_domains,
                timeout_s=window.search_timeout_s or search_timeout_default(),
            )
            info = DEFAULT_MODELS[window.model]
            policy = policy_resolve(
                team=None, provider=info.provider, model=window.model, experiment=None
            )
            run = WindowRun.objects.create(
                window=window,
                status=WindowRunStatus.QUEUED,
                current_stage=EvidenceView.L0_RAW,
                target_stage=window.target_stage,
                resolved_policy={
                    "model": window.model,
                    "provider": info.provider,
                    "policy": policy.to_json(),
                    "sandbox": sandbox.to_json(),
                },
            )
            window_event(
                run,
                "window_run_created",
                EvidenceView.L0_RAW,
                {"window": window.tag, "target_stage": run.target_stage},
            )
            transaction.on_commit(partial(_collect_chain_send, run.pk))
            return run
    except IntegrityError:
        # The partial unique index caught a concurrent collect that bypassed the lock.
        existing = WindowRun.objects.filter(window=window, status__in=ACTIVE_STATUSES).first()
        if existing is None:
            raise
        return existing


# ---------------------------------------------------------------------------------------------
# The collect step
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Filtered:
    rows: list[Evidence]
    missing_fields: int = 0
    refused: int = 0
    duplicates: int = 0
    truncated: int = 0

    @property
    def dropped(self) -> int:
        return self.missing_fields + self.refused + self.duplicates


def _filter_hits(run: WindowRun, hits: list[SearchHit], sandbox: Sandbox) -> _Filtered:
    out = _Filtered(rows=[])
    seen: set[str] = set()
    refusals: dict[str, int] = {}
    for hit in hits:
        url, title, markdown = hit.url.strip(), hit.title.strip(), hit.markdown
        if not url or not title or not markdown.strip():
            out.missing_fields += 1
            continue
        refusal = sandbox.url_refusal(url)
        if refusal is not None:
            out.refused += 1
            refusals[refusal] = refusals.get(refusal, 0) + 1
            continue
        if url in seen:
            out.duplicates += 1
            continue
        seen.add(url)
        text, note = sandbox.cap_markdown(markdown)
        if note:
            out.truncated += 1
        out.rows.append(
            Evidence(
                window_run=run,
                window_id=run.window_id,
                title=title[:MAX_TITLE_CHARS],
                url=url,
                published=hit.published[:40],
                l0_raw=text,
                l0_note=note,
            )
        )
    if refusals:
        logger.info("window run %s: sandbox refused hits: %s", run.pk, refusals)
    return out


def _search(run: WindowRun, sandbox: Sandbox) -> list[SearchHit]:
    """The provider call, with one retry for transient errors. Never inside a transaction."""
    window = run.window
    adapter = search_adapter_get(sandbox=sandbox)
    for attempt in range(1, SEARCH_ATTEMPTS + 1):
        try:
            return adapter.search(
                window.query,
                window.country,
                window.start_date,
                window.end_date,
                window.evidence_limit,
            )
        except SearchError as exc:
            if not exc.transient or attempt == SEARCH_ATTEMPTS:
                raise
            logger.warning(
                "window run %s: search attempt %s failed (%s); retrying", run.pk, attempt, exc.kind
            )
            time.sleep(SEARCH_RETRY_DELAY_S)
    raise AssertionError("unreachable")  # pragma: no cover


def _claim(window_run_id: int, owner: str, lease_s: float) -> bool:
    now = timezone.now()
    return (
        WindowRun.objects.filter(pk=window_run_id, status=WindowRunStatus.QUEUED)
        .filter(Q(collect_lease_expires_at__isnull=True) | Q(collect_lease_expires_at__lt=now))
        .update(
            collect_lease_owner=owner,
            collect_lease_expires_at=now + timedelta(seconds=lease_s),
            collect_attempts=F("collect_attempts") + 1,
            updated_at=now,
        )
        == 1
    )


def _collect_fail(window_run_id: int, owner: str, message: str) -> str:
    with transaction.atomic():
        run = WindowRun.objects.select_for_update().filter(pk=window_run_id).first()
        if run is None or run.collect_lease_owner != owner:
            return "lost"
        if run.status not in (WindowRunStatus.QUEUED, WindowRunStatus.PAUSED):
            return f"skip_{run.status}"
        now = timezone.now()
        run.status = WindowRunStatus.FAILED
        run.last_error = message
        run.completed_at = now
        run.collect_lease_owner = None
        run.collect_lease_expires_at = None
        run.save()
        TransportHold.objects.filter(process=run.process).delete()
        window_event(run, "collect_failed", EvidenceView.L0_RAW, {"error": message[:500]})
    return "failed"


def window_run_collect(*, window_run_id: int) -> str:
    """Search and store evidence for a queued window run (idempotent; see module docstring)."""
    from orchestration.transport.leases import new_owner

    run = WindowRun.objects.select_related("window").filter(pk=window_run_id).first()
    if run is None:
        return "missing"
    sandbox = Sandbox.from_json((run.resolved_policy or {}).get("sandbox"))
    owner = new_owner("collect")
    lease_s = sandbox.timeout_s * SEARCH_ATTEMPTS + SEARCH_RETRY_DELAY_S + COLLECT_LEASE_SLACK_S
    if not _claim(window_run_id, owner, lease_s):
        return "skip"
    run.refresh_from_db()
    if run.collect_attempts > MAX_COLLECT_CLAIMS:
        return _collect_fail(
            window_run_id,
            owner,
            f"collection did not finish after {MAX_COLLECT_CLAIMS} attempts (workers lost "
            "mid-search?); collect the window again",
        )
    try:
        hits = _search(run, sandbox)
    except SearchError as exc:
        return _collect_fail(window_run_id, owner, f"search failed: {exc.message}")
    with transaction.atomic():
        run = WindowRun.objects.select_for_update().select_related("window").get(pk=window_run_id)
        if run.collect_lease_owner != owner:
            return "lost"  # our lease expired and another collect took over
        if run.status not in (WindowRunStatus.QUEUED, WindowRunStatus.PAUSED):
            return f"skip_{run.status}"  # canceled while searching: keep nothing
        filtered = _filter_hits(run, hits, sandbox)
        Evidence.objects.bulk_create(filtered.rows, ignore_conflicts=True, batch_size=1000)
        count = Evidence.objects.filter(window_run=run).count()
        now = timezone.now()
        run.search_count = len(hits)
        run.dropped_count = filtered.dropped
        run.truncated_count = filtered.truncated
        run.collected_at = now
        run.started_at = run.started_at or now
        run.collect_lease_owner = None
        run.collect_lease_expires_at = None
        outcome = "collected"
        if count == 0 or run.target_stage == EvidenceView.L0_RAW:
            run.status = WindowRunStatus.COMPLETED
            run.completed_at = now
            TransportHold.objects.filter(process=run.process).delete()
            outcome = "completed"
        elif run.status == WindowRunStatus.QUEUED:
            run.status = WindowRunStatus.RUNNING
        run.save()
        window_event(
            run,
            "collect_completed",
            EvidenceView.L0_RAW,
            {
                "hits": len(hits),
                "evidence": count,
                "dropped": filtered.dropped,
                "missing_fields": filtered.missing_fields,
                "refused_by_sandbox": filtered.refused,
                "duplicates": filtered.duplicates,
                "truncated": filtered.truncated,
            },
        )
    return outcome


# ---------------------------------------------------------------------------------------------
# Control: pause, resume, cancel
# ---------------------------------------------------------------------------------------------


def _locked(window_run_id: int) -> WindowRun:
    run = WindowRun.objects.select_for_update().filter(pk=window_run_id).first()
    if run is None:
        raise EvidenceNotFound(f"window run {window_run_id} does not exist", fix="check the id")
    return run


def window_run_pause(*, window_run_id: int) -> WindowRun:
    """Stop routing new requests (in-flight work finishes and is applied)."""
    with transaction.atomic():
        run = _locked(window_run_id)
        if run.status == WindowRunStatus.PAUSED:
            return run
        if run.status not in (WindowRunStatus.QUEUED, WindowRunStatus.RUNNING):
            raise EvidenceInvalidState(
                f"window run {window_run_id} is {run.status}; only queued or running runs "
                "can be paused",
                fix="nothing to pause",
            )
        TransportHold.objects.get_or_create(process=run.process, defaults={"reason": "paused"})
        run.status = WindowRunStatus.PAUSED
        run.save(update_fields=["status", "updated_at"])
        window_event(run, "window_run_paused", run.current_stage, {"reason": "operator"})
    return run


def window_run_resume(*, window_run_id: int) -> WindowRun:
    with transaction.atomic():
        run = _locked(window_run_id)
        if run.status != WindowRunStatus.PAUSED:
            raise EvidenceInvalidState(
                f"window run {window_run_id} is {run.status}, not paused",
                fix="only paused window runs resume",
            )
        collected = run.collected_at is not None
        run.status = WindowRunStatus.RUNNING if collected else WindowRunStatus.QUEUED
        run.save(update_fields=["status", "updated_at"])
        TransportHold.objects.filter(process=run.process).delete()
        window_event(run, "window_run_resumed", run.current_stage, {})
        if collected:
            transaction.on_commit(partial(windows_advance_enqueue, [run.pk]))
        else:
            transaction.on_commit(partial(_collect_chain_send, run.pk))
    return run


def window_run_cancel(*, window_run_id: int, reason: str = "canceled by operator") -> WindowRun:
    """Terminal: pending and in-flight attempts become ``canceled`` (late results ignored)."""
    from orchestration import tasks as transport_tasks

    with transaction.atomic():
        run = _locked(window_run_id)
        if run.status == WindowRunStatus.CANCELED:
            return run
        if run.status in (WindowRunStatus.COMPLETED, WindowRunStatus.FAILED):
            raise EvidenceInvalidState(
                f"window run {window_run_id} is already {run.status}", fix="nothing to cancel"
            )
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
        run.status = WindowRunStatus.CANCELED
        run.completed_at = now
        run.last_error = reason
        run.collect_lease_owner = None
        run.collect_lease_expires_at = None
        run.save()
        window_event(run, "window_run_canceled", run.current_stage, {"requests_canceled": canceled})
        # Batches with nothing left in flight for anyone: cancel them at the provider.
        doomed = list(
            LlmBatch.objects.filter(status=BatchStatus.RUNNING, requests__process=run.process)
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
        for batch_id in doomed:
            transaction.on_commit(partial(transport_tasks.batch_cancel.delay, batch_id=batch_id))
    return run


# ---------------------------------------------------------------------------------------------
# Reconciliation (the periodic fallback)
# ---------------------------------------------------------------------------------------------


def windows_reconcile(*, limit: int = 200) -> int:
    """Re-drive active window runs (every tick; throttled to once per RECONCILE_EVERY_S).

    Queued runs whose collect lease is free or expired get the collect chain again (the claim
    makes a duplicate a no-op); running runs get ``window_advance``. Bounded, oldest first.
    """
    from orchestration.transport.leases import lock_acquire, new_owner

    if not lock_acquire(name="reconcile:windows", owner=new_owner("rec"), ttl_s=RECONCILE_EVERY_S):
        return 0
    now = timezone.now()
    queued = list(
        WindowRun.objects.filter(status=WindowRunStatus.QUEUED)
        .filter(Q(collect_lease_expires_at__isnull=True) | Q(collect_lease_expires_at__lt=now))
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    running = list(
        WindowRun.objects.filter(status=WindowRunStatus.RUNNING)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    for window_run_id in queued:
        _collect_chain_send(window_run_id)
    windows_advance_enqueue(running)
    return len(queued) + len(running)


# ---------------------------------------------------------------------------------------------
# Demo helper
# ---------------------------------------------------------------------------------------------

DEMO_COUNTRIES = ("Hungary", "Poland", "Brazil", "India", "Italy", "Turkey")


def demo_windows_collect(
    *,
    tag_prefix: str,
    windows: int = 2,
    per_window: int = 10,
    model: str = "gpt-4.1-mini",
    target_stage: str = EvidenceView.L3_ABSTRACTED,
) -> list[WindowRun]:
    """Create demo windows (same query/countries/dates as ``demo_pool_load``) and collect them.

    Idempotent: an existing window is reused, and a window whose latest run completed (or is
    still active) is not collected again. The caller drives the pipeline (worker + beat, or
    ``tick_run`` in-process) and may then freeze a pool with ``windows_pool_create``.
    """
    runs: list[WindowRun] = []
    for index in range(windows):
        country = DEMO_COUNTRIES[index % len(DEMO_COUNTRIES)]
        suffix = f"-{index // len(DEMO_COUNTRIES)}" if index >= len(DEMO_COUNTRIES) else ""
        tag = f"{tag_prefix}-{country.lower()}{suffix}"
        if not Window.objects.filter(tag=tag).exists():
            window_create(
                tag=tag,
                query="fascism",
                country=country,
                start_date=dt.date(2026, 1, 1),
                end_date=dt.date(2026, 1, 31),
                model=model,
                evidence_limit=per_window,
                target_stage=target_stage,
            )
        latest = WindowRun.objects.filter(window__tag=tag).order_by("-pk").first()
        if latest is not None and latest.status in (*ACTIVE_STATUSES, WindowRunStatus.COMPLETED):
            runs.append(latest)
        else:
            runs.append(window_collect(tag=tag))
    return runs


def window_run_summary(run: WindowRun) -> dict[str, Any]:
    """The one-line facts about a window run (command output)."""
    return {
        "window_run_id": run.pk,
        "window": run.window.tag,
        "status": run.status,
        "current_stage": run.current_stage,
        "target_stage": run.target_stage,
        "created_at": run.created_at.isoformat() if run.created_at else None,
    }
