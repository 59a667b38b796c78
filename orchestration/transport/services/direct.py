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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from orchestration.models import LlmRequest, RequestStatus, Route
from orchestration.transport import limits
from orchestration.transport.leases import lock_acquire, lock_release, new_owner
from orchestration.transport.policy import transport_policy
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

logger = logging.getLogger(__name__)

RUNNER_SLICE_S = 50.0


def runner_lock_name(provider: str, model: str) -> str:
    return f"direct:{provider}:{model}"


@dataclass(slots=True)
class RunnerReport:
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    deferred: int = 0
    loops: int = 0


def _claim(provider: str, model: str, owner: str, limit: int, lease_s: float) -> list[int]:
    policy = transport_policy(provider=provider, model=model)
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


def direct_run(*, provider: str, model: str, slice_s: float = RUNNER_SLICE_S) -> RunnerReport:
    """Run direct calls for one provider/model until nothing is due or the slice ends."""
    report = RunnerReport()
    owner = new_owner("direct")
    lock = runner_lock_name(provider, model)
    policy = transport_policy(provider=provider, model=model)
    lease_s = policy.request_timeout_s + 60.0
    if not lock_acquire(name=lock, owner=owner, ttl_s=lease_s):
        return report
    adapter = get_adapter(provider)
    deadline = time.monotonic() + slice_s
    try:
        with ThreadPoolExecutor(max_workers=max(policy.direct_concurrency, 1)) as pool:
            while time.monotonic() < deadline:
                report.loops += 1
                ids = _claim(provider, model, owner, policy.direct_concurrency, lease_s)
                if not ids:
                    break
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
                reservation = f"direct:{owner}:{report.loops}"
                admission = limits.admit(
                    reservation_id=reservation,
                    demands=limits.direct_demands(
                        policy, requests=len(rows), input_tokens=in_tokens, output_tokens=out_tokens
                    ),
                )
                if not admission.granted:
                    _unclaim(ids, owner, admission.retry_after)
                    report.deferred += len(ids)
                    break
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
                # Network I/O only in threads, and never inside a transaction.
                futures = [
                    pool.submit(_call, adapter, req, rid, policy.request_timeout_s)
                    for rid, req in requests
                ]
                outcomes = [f.result() for f in futures]
                report.calls += len(outcomes)
                stats: ApplyStats = outcomes_apply(outcomes=outcomes, lease_owner=owner)
                report.succeeded += stats.succeeded
                report.failed += stats.failed
                limits.settle(
                    reservation_id=reservation,
                    policy=policy,
                    requests=len(outcomes),
                    input_tokens=stats.input_tokens,
                    output_tokens=stats.output_tokens,
                )
                lock_acquire(name=lock, owner=owner, ttl_s=lease_s)
    finally:
        lock_release(name=lock, owner=owner)
        connection.close_if_unusable_or_obsolete()
    return report


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
