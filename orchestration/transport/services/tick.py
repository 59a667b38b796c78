"""The tick: the periodic driver that re-derives all due work from the database.

Beat sends ``orchestration.tick`` every few seconds; anything may also kick it early. Only one
tick runs at a time (a named lease taken by conditional UPDATE; a second beat, a duplicated
message or a kick while one runs simply return). Every step is bounded, so one tick is short
and losing every Celery message only delays work by one tick (ARCHITECTURE.md 3.4):

1. fail direct calls whose lease expired (worker died mid-call) -> retried as new attempts;
2. form batch shards from due pending requests and start direct runners;
3. (re)dispatch batches: queued (submit message lost), submitting with an expired lease
   (unknown outcome -> recovery lookup), running and due (poll), finalizing with an expired
   lease or due (finalize);
4. run the domain reconcilers (advance runs/windows whose stage settled);
5. record stalls.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import DatabaseError, connection, transaction
from django.db.models import CharField, F, Q, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from orchestration.models import BatchStatus, LlmBatch, LlmRequest, RequestStatus, SchedulerLock
from orchestration.transport import registry
from orchestration.transport.leases import lock_acquire, lock_release, new_owner
from orchestration.transport.policy import transport_policy
from orchestration.transport.services.batches import (
    POLL_LEASE_S,
    batches_form,
    direct_eligible,
    pending_due,
)
from orchestration.transport.services.direct import direct_orphans_fail, runner_lock_name
from orchestration.transport.sql import is_postgres, retry_on_db_outage

logger = logging.getLogger(__name__)

TICK_LOCK = "tick"
#: A tick takes tens of milliseconds (W6: 35 ms with 1,000 active batches) and only enqueues
#: long work, so 15 s is ample; it bounds the stall when a tick dies holding the lock (kill -9,
#: or Celery terminating it on a broker connection loss: the F4R matrix saw a 58 s stall at 60).
#: A tick that did outlive it would only overlap another: every claim is conditional.
TICK_LOCK_TTL_S = 15.0
#: Per kind per tick. Claims and sends are one statement and one message each, so the cap
#: only bounds a tick's duration: 200 polls per 2 s tick cover 1,000 long-running batches
#: within a 10 s poll interval (short polls bypass the tick altogether).
MAX_DISPATCH = 200
REDISPATCH_AFTER_S = 30.0


@dataclass(slots=True)
class TickReport:
    ran: bool = False
    orphans_failed: int = 0
    batches_formed: int = 0
    direct_runners: int = 0
    submits: int = 0
    polls: int = 0
    finalizes: int = 0
    reconcilers: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def tick_run(*, dispatch: bool = True) -> TickReport:
    """One bounded pass. ``dispatch=False`` forms work but sends no Celery messages (tests)."""
    report = TickReport()
    owner = new_owner("tick")
    if not lock_acquire(name=TICK_LOCK, owner=owner, ttl_s=TICK_LOCK_TTL_S):
        return report
    started = time.monotonic()
    report.ran = True
    try:
        report.orphans_failed = direct_orphans_fail()
        _route(report, dispatch)
        _dispatch_batches(report, dispatch)
        for name, reconcile in registry.reconcilers():
            try:
                reconcile()
                report.reconcilers += 1
            except Exception as exc:  # a broken domain reconciler must not stop transport
                logger.exception("reconciler %s failed", name)
                report.errors.append(f"{name}: {exc}")
        SchedulerLock.objects.filter(name=TICK_LOCK, owner=owner).update(runs=F("runs") + 1)
    finally:
        # After a database restart this release must reconnect: a lock left behind stops
        # every tick for TICK_LOCK_TTL_S (the F5 matrix saw 60 s stalls).
        try:
            retry_on_db_outage(
                lambda: lock_release(name=TICK_LOCK, owner=owner), what="tick release", grace_s=10
            )
        except DatabaseError:
            logger.warning("tick %s could not release its lock; it expires in %.0fs", owner,
                           TICK_LOCK_TTL_S)  # fmt: skip
        report.seconds = time.monotonic() - started
    return report


#: Distinct (provider, model) among pending rows by a skip scan of request_pending_due: one
#: index probe per model instead of reading every pending row (10^6 at the start of a big
#: stage) on every tick. Due-ness and holds are checked per model by the claim itself.
_PENDING_MODELS_PG = """
WITH RECURSIVE pm(provider, model) AS (
    (SELECT provider, model FROM orchestration_llmrequest
     WHERE status = 'pending' ORDER BY provider, model LIMIT 1)
    UNION ALL
    SELECT nxt.provider, nxt.model FROM pm CROSS JOIN LATERAL (
        SELECT r.provider, r.model FROM orchestration_llmrequest r
        WHERE r.status = 'pending' AND (r.provider, r.model) > (pm.provider, pm.model)
        ORDER BY r.provider, r.model LIMIT 1
    ) nxt
)
SELECT provider, model FROM pm
"""


def pending_models() -> list[tuple[str, str]]:
    """(provider, model) pairs that have pending requests (due or not, held or not)."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute(_PENDING_MODELS_PG)
            return [(str(p), str(m)) for p, m in cursor.fetchall()]
    return list(
        LlmRequest.objects.filter(status=RequestStatus.PENDING)
        .values_list("provider", "model")
        .distinct()
        .order_by()
    )


def _route(report: TickReport, dispatch: bool) -> None:
    for provider, model in pending_models():
        try:
            formed = batches_form(provider=provider, model=model)
        except Exception as exc:
            logger.exception("forming batches failed for %s/%s", provider, model)
            report.errors.append(f"form {provider}/{model}: {exc}")
            continue
        report.batches_formed += len(formed.batch_ids)
        policy = transport_policy(provider=provider, model=model)
        direct_q = pending_due(provider=provider, model=model) & direct_eligible(policy)
        small_leftover = policy.batch_mode == "auto" and formed.leftover_small > 0
        has_direct = LlmRequest.objects.filter(direct_q).exists()
        if small_leftover:
            # Fewer due batchable requests than min_batch_size: a batch would not pay off
            # (the original routes small chunks to direct jobs too).
            LlmRequest.objects.filter(
                pending_due(provider=provider, model=model),
                batchable=True,
                route_hint="auto",
            ).update(route_hint="direct")
            has_direct = True
        if has_direct and _runner_free(provider, model):
            report.direct_runners += 1
            if dispatch:
                _send("direct_calls", provider=provider, model=model)


def _runner_free(provider: str, model: str) -> bool:
    now = timezone.now()
    return not SchedulerLock.objects.filter(
        name=runner_lock_name(provider, model), expires_at__gt=now
    ).exists()


def _dispatch_batches(report: TickReport, dispatch: bool) -> None:
    now = timezone.now()
    later = now + timedelta(seconds=REDISPATCH_AFTER_S)
    lease_free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    # Submits: queued and due, or submitting with an expired lease (recovery).
    submit_ids = list(
        LlmBatch.objects.filter(
            Q(status=BatchStatus.QUEUED, next_poll_at__lte=now)
            | Q(status=BatchStatus.SUBMITTING, lease_expires_at__lt=now, next_poll_at__lte=now)
        ).values_list("id", flat=True)[:MAX_DISPATCH]
    )
    if submit_ids:
        # Debounce: the submit task claims by conditional UPDATE anyway.
        LlmBatch.objects.filter(pk__in=submit_ids).update(next_poll_at=later)
        for bid in submit_ids:
            report.submits += 1
            if dispatch:
                _send("batch_submit", batch_id=bid)
    for status, task, counter in (
        (BatchStatus.RUNNING, "batch_poll", "polls"),
        (BatchStatus.FINALIZING, "batch_finalize", "finalizes"),
    ):
        claimed = _claim_leases(status, lease_free, now)
        for bid, owner in claimed:
            setattr(report, counter, getattr(report, counter) + 1)
            if dispatch:
                _send(task, batch_id=bid, lease_owner=owner)


def _claim_leases(status: str, lease_free: Q, now: object) -> list[tuple[int, str]]:
    """Claim due batches of one status with SKIP LOCKED; each gets its own lease owner."""
    claimed: list[tuple[int, str]] = []
    with transaction.atomic():
        ids = list(
            LlmBatch.objects.filter(lease_free, status=status, next_poll_at__lte=now)
            .order_by("next_poll_at")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:MAX_DISPATCH]
        )
        if not ids:
            return claimed
        # One statement for all of them (W6: one UPDATE per batch made the statements per
        # tick grow with the number of due batches). Owners stay unique per claim: this
        # claim's fresh token (leases.new_owner's shape) with the batch id in its last part.
        token = new_owner("poll" if status == BatchStatus.RUNNING else "finalize")
        LlmBatch.objects.filter(pk__in=ids).update(
            lease_owner=Concat(Value(f"{token}-"), Cast("id", CharField())),
            lease_expires_at=timezone.now() + timedelta(seconds=POLL_LEASE_S),
        )
        claimed = [(bid, f"{token}-{bid}") for bid in ids]
    return claimed


def _send(task: str, **kwargs: object) -> None:
    from orchestration import tasks

    fn = getattr(tasks, task)
    transaction.on_commit(lambda: fn.delay(**kwargs))
