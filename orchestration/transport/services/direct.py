"""Direct (non-batch) calls with bounded concurrency per (provider, model).

One *runner* per (provider, model) at a time, held by a named lease: it repeatedly claims up
to ``direct_concurrency`` due requests (``SKIP LOCKED``, per-request lease), reserves rate
capacity for them, calls the provider from a thread pool (network only in threads; all
database work stays on the runner's thread), applies the outcomes in one transaction, and
loops until nothing is due or its time slice ends. A killed runner leaves requests with an
expired lease; the tick turns those into ``timeout`` failures and retries them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from orchestration.models import LlmRequest, RequestStatus, Route, SchedulerLock
from orchestration.transport import limits
from orchestration.transport.leases import lock_acquire, lock_release, new_owner
from orchestration.transport.policy import TransportPolicy, transport_policy
from orchestration.transport.providers import get_adapter
from orchestration.transport.providers.base import (
    ChatRequest,
    ErrorClass,
    ProviderAdapter,
    ProviderError,
    provider_custom_id,
)
from orchestration.transport.services.apply import ApplyStats, Outcome, outcomes_apply
from orchestration.transport.services.batches import direct_eligible, pending_due
from orchestration.transport.sql import retry_on_db_outage

logger = logging.getLogger(__name__)

RUNNER_SLICE_S = 50.0
APPLY_EVERY_S = 0.2  # apply completed outcomes at least this often (bulk, one transaction)
RENEW_EVERY_S = 5.0  # runner lock renewal period (the lease is request_timeout + 60 s)


def runner_lock_name(provider: str, model: str) -> str:
    return f"direct:{provider}:{model}"


@dataclass(slots=True)
class RunnerReport:
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    deferred: int = 0
    loops: int = 0


def _claim(
    provider: str,
    model: str,
    owner: str,
    limit: int,
    lease_s: float,
    policy: TransportPolicy | None = None,
) -> list[int]:
    policy = policy or transport_policy(provider=provider, model=model)
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            LlmRequest.objects.filter(
                pending_due(provider=provider, model=model) & direct_eligible(policy)
            )
            .order_by("next_attempt_at", "id")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            LlmRequest.objects.filter(pk__in=ids, status=RequestStatus.PENDING).update(
                status=RequestStatus.IN_FLIGHT,
                route=Route.DIRECT,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                started_at=now,
            )
    return ids


def _unclaim(ids: list[int], owner: str, retry_after: float) -> None:
    """Give claimed requests back *before any call was made* (rate-limit denial).

    This is the one place an in-flight row returns to pending: no provider call happened, so
    no attempt was consumed and nothing is rewritten.
    """
    LlmRequest.objects.filter(pk__in=ids, lease_owner=owner, status=RequestStatus.IN_FLIGHT).update(
        status=RequestStatus.PENDING,
        route=None,
        lease_owner=None,
        lease_expires_at=None,
        started_at=None,
        next_attempt_at=timezone.now() + timedelta(seconds=retry_after),
    )


def _call(adapter: ProviderAdapter, request: ChatRequest, rid: int, timeout: float) -> Outcome:
    try:
        row = adapter.direct_call(request, timeout=timeout)
    except ProviderError as exc:
        return Outcome(
            request_id=rid,
            ok=False,
            error_class=exc.error_class.value,
            error_message=exc.message,
            retry_after=exc.retry_after,
        )
    except Exception as exc:
        logger.exception("unexpected error in direct call")
        return Outcome(
            request_id=rid,
            ok=False,
            error_class=ErrorClass.UNKNOWN.value,
            error_message=f"{type(exc).__name__}: {exc}",
        )
    if row.ok:
        return Outcome(
            request_id=rid,
            ok=True,
            output_text=row.output_text or "",
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
        )
    return Outcome(
        request_id=rid,
        ok=False,
        output_text=row.raw,
        error_class=(row.error_class or ErrorClass.UNKNOWN).value,
        error_message=row.error_message or "error",
    )


@dataclass(slots=True)
class _Group:
    """One claim: its rate reservation and how many of its calls are still outstanding."""

    reservation_id: str
    outstanding: int
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


def _claim_group(
    provider: str,
    model: str,
    owner: str,
    want: int,
    lease_s: float,
    policy: TransportPolicy,
    serial: int,
) -> tuple[list[tuple[int, ChatRequest]], _Group | None, float]:
    """Claim up to ``want`` due requests and reserve rate capacity for them.

    Returns (requests, group, retry_after). On a rate-limit denial the claim is given back
    and ``retry_after`` says when to try again.
    """
    ids = _claim(provider, model, owner, want, lease_s, policy)
    if not ids:
        return [], None, 0.0
    rows = list(
        LlmRequest.objects.filter(pk__in=ids, lease_owner=owner).values_list(
            "id",
            "provider_model",
            "system_prompt__content",
            "user_prompt",
            "params",
            "est_input_tokens",
        )
    )
    out_tokens = sum(int((r[4] or {}).get("max_output_tokens", 8000)) for r in rows)
    in_tokens = sum(r[5] for r in rows)
    reservation = f"direct:{owner}:{serial}"
    admission = limits.admit(
        reservation_id=reservation,
        demands=limits.direct_demands(
            policy, requests=len(rows), input_tokens=in_tokens, output_tokens=out_tokens
        ),
    )
    if not admission.granted:
        _unclaim(ids, owner, admission.retry_after)
        return [], None, admission.retry_after
    requests = [
        (
            rid,
            ChatRequest(
                custom_id=provider_custom_id(rid),
                model=pmodel,
                system=system,
                user=user,
                max_output_tokens=int((params or {}).get("max_output_tokens", 8000)),
                temperature=(params or {}).get("temperature"),
            ),
        )
        for rid, pmodel, system, user, params, _est in rows
    ]
    return requests, _Group(reservation_id=reservation, outstanding=len(requests)), 0.0


def direct_task_canceled(*, owner_suffix: str, provider: str, model: str, grace_s: float) -> int:
    """The worker terminated a runner (e.g. on a broker loss): end its leases after a grace.

    Its in-flight rows then fail as "direct call lease expired" at the next tick and are
    retried as new attempts (a call may have reached the provider; the verifier reports
    those separately), and the runner lock is free for a new runner, instead of both waiting
    out ``request_timeout + 60`` seconds. Returns the rows whose lease was shortened.
    """
    soon = timezone.now() + timedelta(seconds=grace_s)
    # The runner's owner ends in its task id (orchestration.tasks.direct_owner).
    changed = LlmRequest.objects.filter(
        lease_owner__startswith="direct:",
        lease_owner__endswith=owner_suffix,
        status=RequestStatus.IN_FLIGHT,
        lease_expires_at__gt=soon,
    ).update(lease_expires_at=soon)
    SchedulerLock.objects.filter(
        name=runner_lock_name(provider, model),
        owner__startswith="direct:",
        owner__endswith=owner_suffix,
        expires_at__gt=soon,
    ).update(expires_at=soon)
    return changed


def direct_run(
    *, provider: str, model: str, slice_s: float = RUNNER_SLICE_S, owner: str | None = None
) -> RunnerReport:
    """Run direct calls for one provider/model until nothing is due or the slice ends.

    A continuous pipeline, not lock-step rounds: up to ``direct_concurrency`` calls are in
    flight at all times, refilled from a local queue of already-claimed requests (up to one
    more concurrency's worth, claimed in groups of at least half the concurrency so claims
    stay bulk and overlap with the calls); completed outcomes are applied in bulk every
    ``APPLY_EVERY_S`` or ``concurrency`` results. Each claim and each apply is a few round
    trips and one commit, so the batching is what sets the ceiling. A slow call therefore never
    holds up the others (measured: lock-step rounds reached ~50% of the ideal rate at
    concurrency 8 and ~20% at 32 with 100 ms calls).
    """
    report = RunnerReport()
    owner = owner or new_owner("direct")
    lock = runner_lock_name(provider, model)
    policy = transport_policy(provider=provider, model=model)
    lease_s = policy.request_timeout_s + 60.0
    if not lock_acquire(name=lock, owner=owner, ttl_s=lease_s):
        return report
    adapter = get_adapter(provider)
    concurrency = max(policy.direct_concurrency, 1)
    deadline = time.monotonic() + slice_s
    in_flight: dict[Future[Outcome], _Group] = {}
    # Claimed (leased, reserved) but not yet started: refills come from here instantly, and
    # the next claim overlaps with calls in flight instead of starving the pool.
    ready: deque[tuple[int, ChatRequest, _Group]] = deque()
    done_outcomes: list[tuple[Outcome, _Group]] = []
    no_claim_until = 0.0
    drained = False
    last_apply = time.monotonic()
    last_renew = last_apply
    serial = 0

    started: set[int] = set()  # ids whose call was handed to the pool

    def apply_done() -> None:
        nonlocal last_apply
        if not done_outcomes:
            return
        outcomes = [o for o, _ in done_outcomes]
        # These calls are paid for: ride out a database restart rather than lose them.
        stats: ApplyStats = retry_on_db_outage(
            lambda: outcomes_apply(outcomes=outcomes, lease_owner=owner), what="direct apply"
        )
        report.succeeded += stats.succeeded
        report.failed += stats.failed
        for outcome, group in done_outcomes:
            group.outstanding -= 1
            group.requests += 1
            group.input_tokens += outcome.input_tokens
            group.output_tokens += outcome.output_tokens
            if group.outstanding == 0:
                limits.settle(
                    reservation_id=group.reservation_id,
                    policy=policy,
                    requests=group.requests,
                    input_tokens=group.input_tokens,
                    output_tokens=group.output_tokens,
                )
        done_outcomes.clear()
        last_apply = time.monotonic()
        nonlocal last_renew
        if last_apply - last_renew >= RENEW_EVERY_S:
            retry_on_db_outage(
                lambda: lock_acquire(name=lock, owner=owner, ttl_s=lease_s), what="runner renew"
            )
            last_renew = last_apply

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            while True:
                now = time.monotonic()
                want = 2 * concurrency - len(in_flight) - len(ready)
                can_claim = not drained and now < deadline and now >= no_claim_until
                if can_claim and want > 0 and (want >= max(1, concurrency // 2) or not ready):
                    serial += 1
                    report.loops += 1
                    try:
                        requests, group, retry_after = _claim_group(
                            provider, model, owner, want, lease_s, policy, serial
                        )
                    except (OperationalError, InterfaceError):
                        # The database went away: claim nothing more this slice, finish and
                        # apply the calls in flight (claimed-but-unstarted rows are given
                        # back below).
                        logger.warning("direct runner %s: claim failed; draining", owner)
                        with suppress(DatabaseError):
                            connection.close()
                        requests, group, retry_after = [], None, slice_s
                    if group is None:
                        if retry_after > 0:
                            report.deferred += 1
                            no_claim_until = time.monotonic() + retry_after
                        else:
                            drained = True  # nothing due now
                    else:
                        ready.extend((rid, req, group) for rid, req in requests)
                        report.calls += len(requests)
                while ready and len(in_flight) < concurrency:
                    # Network I/O only in threads, and never inside a transaction.
                    rid, req, group = ready.popleft()
                    started.add(rid)
                    fut = pool.submit(_call, adapter, req, rid, policy.request_timeout_s)
                    in_flight[fut] = group
                if not in_flight:
                    apply_done()
                    # Nothing running: stop when drained, past the slice, or rate-limited
                    # for longer than the slice has left (the tick restarts us later).
                    if drained or time.monotonic() >= deadline or no_claim_until >= deadline:
                        break
                    time.sleep(min(max(no_claim_until - time.monotonic(), 0.01), 1.0))
                    continue
                done, _ = wait(list(in_flight), timeout=APPLY_EVERY_S, return_when=FIRST_COMPLETED)
                for fut in done:
                    done_outcomes.append((fut.result(), in_flight.pop(fut)))
                if len(done_outcomes) >= concurrency or (
                    done_outcomes and time.monotonic() - last_apply >= APPLY_EVERY_S
                ):
                    apply_done()
                if drained and time.monotonic() - last_apply >= APPLY_EVERY_S:
                    drained = False  # new work may have arrived (retries, other stages)
            apply_done()
    finally:
        with suppress(DatabaseError):
            retry_on_db_outage(
                lambda: _release_unstarted(owner, started), what="direct release", grace_s=5.0
            )
            retry_on_db_outage(
                lambda: lock_release(name=lock, owner=owner), what="runner release", grace_s=5.0
            )
        connection.close_if_unusable_or_obsolete()
    return report


def _release_unstarted(owner: str, started: set[int]) -> int:
    """Give back rows this runner claimed but never called (it stopped early: an exception,
    a failed claim). No call happened, so they return to pending instead of failing as
    "lease expired" a lease period later and being counted as calls lost in flight."""
    leftover = [
        rid
        for rid in LlmRequest.objects.filter(  # the small in-flight-direct partial index
            status=RequestStatus.IN_FLIGHT, route=Route.DIRECT, lease_owner=owner
        ).values_list("id", flat=True)
        if rid not in started
    ]
    if leftover:
        _unclaim(leftover, owner, 0.0)
    return len(leftover)


def direct_orphans_fail(*, limit: int = 1000) -> int:
    """Requests whose direct-call lease expired (runner died): fail as timeout and retry.

    The provider may have received the call; if so the retry is an extra (reported)
    submission, which PROOF.md allows only for calls in flight during a crash.
    """
    now = timezone.now()
    rows = list(
        LlmRequest.objects.filter(
            status=RequestStatus.IN_FLIGHT, route=Route.DIRECT, lease_expires_at__lt=now
        ).values_list("id", "lease_owner")[:limit]
    )
    by_owner: dict[str, list[int]] = {}
    for rid, owner in rows:
        by_owner.setdefault(owner or "", []).append(rid)
    failed = 0
    for owner, ids in by_owner.items():
        stats = outcomes_apply(
            outcomes=[
                Outcome(
                    request_id=rid,
                    ok=False,
                    error_class=ErrorClass.TIMEOUT.value,
                    error_message="direct call lease expired (worker lost mid-call)",
                )
                for rid in ids
            ],
            lease_owner=owner or None,
        )
        failed += stats.failed
    return failed
