"""F5 finding, without processes: a finalize that dies on a database error holds its batch.

Seen in the matrix (F5, seeds 2001 and 2002): Postgres restarted while a batch was being
finalized; ``batch_finalize`` raised ``OperationalError``, Celery acked the failed task (an
exception is not a lost worker), and the batch stayed ``finalizing`` under a live lease for
the whole ``FINALIZE_LEASE_S`` (300 s) before the tick could hand it out again: nothing was
lost, but the run stalled for five minutes after a restart of a few seconds.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.db.models import Q
from django.utils import timezone

from orchestration.models import LlmBatch, LlmRequest
from orchestration.transport.providers.openai_adapter import OpenAIAdapter
from orchestration.transport.services import batches
from orchestration.transport.services.tick import _claim_leases
from tests.transport.helpers import enqueue_bench

pytestmark = pytest.mark.django_db(transaction=True)


def _lapse(batch_id: int) -> None:
    """The message that carried the lease was dropped: let its (short) lease run out."""
    LlmBatch.objects.filter(pk=batch_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def _claim(status: str) -> str:
    now = timezone.now()
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    (claimed,) = _claim_leases(status, free, now + timedelta(seconds=60))
    return claimed[1]


def _submitted_and_polled(batch_id: int) -> str:
    assert batches.batch_submit(batch_id=batch_id) == "submitted"
    _lapse(batch_id)  # the first poll, handed over by the submit, never arrived
    owner = _claim("running")
    assert batches.batch_poll(batch_id=batch_id, lease_owner=owner) == "finalizing"
    return owner


@pytest.mark.parametrize("socket_broken", [False, True], ids=["error", "restart"])
def test_failed_finalize_does_not_hold_its_batch_for_the_whole_lease(
    simulator, monkeypatch, socket_broken
) -> None:
    """``restart``: F5 (matrix seeds 3000/3001) also breaks the task's connection, so the
    lease release in the error path failed too and the batch waited out FINALIZE_LEASE_S;
    the release now reconnects."""
    from django.db import connection

    monkeypatch.setattr(batches, "_enqueue", lambda *a, **k: None)  # no broker: drive by hand
    enqueue_bench(60)
    (batch_id,) = batches.batches_form(provider="openai", model="gpt-4.1-mini").batch_ids
    owner = _submitted_and_polled(batch_id)

    real = OpenAIAdapter.iter_results

    def dies_midway(self, info):  # the database goes away after some rows were read
        for n, row in enumerate(real(self, info)):
            if n == 10:
                if socket_broken:
                    connection.connection.close()  # what the restart does to the socket
                raise OperationalError("server closed the connection unexpectedly")
            yield row

    monkeypatch.setattr(OpenAIAdapter, "iter_results", dies_midway)
    with pytest.raises(OperationalError):
        batches.batch_finalize(batch_id=batch_id, lease_owner=owner)
    batch = LlmBatch.objects.get(pk=batch_id)
    assert batch.status == "finalizing"
    assert LlmRequest.objects.filter(batch_id=batch_id, status="in_flight").count() == 60
    # The tick must be able to re-dispatch it soon, not after a whole FINALIZE_LEASE_S.
    held_for = (
        (batch.lease_expires_at - timezone.now()).total_seconds() if batch.lease_expires_at else 0
    )
    assert held_for <= batches.FAILED_FINALIZE_RETRY_S + 1, (
        f"a failed finalize keeps its lease for another {held_for:.0f}s"
    )


def test_direct_results_survive_a_lost_connection(simulator, monkeypatch) -> None:
    """A direct runner whose connection breaks before it applies finished calls reconnects
    and applies them: the calls are paid for, so they must not fail as "lease expired" and
    be called again a lease period later."""
    from django.db import connection

    from orchestration.transport.services import direct

    enqueue_bench(12, route_hint="direct")
    real = direct.outcomes_apply
    broken = []

    def apply_after_a_restart(**kwargs):
        if not broken:
            broken.append(True)
            connection.connection.close()
        return real(**kwargs)

    monkeypatch.setattr(direct, "outcomes_apply", apply_after_a_restart)
    report = direct.direct_run(provider="openai", model="gpt-4.1-mini", slice_s=30)
    assert broken
    assert report.succeeded == 12
    assert LlmRequest.objects.filter(status="succeeded", attempt_index=1).count() == 12
    assert not LlmRequest.objects.exclude(status="succeeded").exists()


def test_a_runner_that_stops_early_gives_back_rows_it_never_called(simulator) -> None:
    from orchestration.transport.services import direct

    enqueue_bench(6, route_hint="direct")
    owner = "direct:test:1:stopped"
    ids = direct._claim(provider="openai", model="gpt-4.1-mini", owner=owner, limit=6, lease_s=600)
    assert len(ids) == 6
    assert direct._release_unstarted(owner, started={ids[0]}) == 5
    assert set(LlmRequest.objects.filter(status="pending").values_list("id", flat=True)) == set(
        ids[1:]
    )
    assert LlmRequest.objects.get(pk=ids[0]).status == "in_flight"  # its call may have happened
    assert not LlmRequest.objects.filter(status="failed").exists()


def test_lost_handoffs_are_redispatched_within_the_handoff_lease(simulator, monkeypatch) -> None:
    """F3 (chaos seed 3002): a worker killed between the poll's commit of ``finalizing`` and
    the send of ``batch_finalize`` left the batch under a 300 s finalize lease. Every lease
    handed over with a message is now short; the receiving task extends it."""
    sent: list[tuple[str, int, str | None]] = []
    monkeypatch.setattr(
        batches,
        "_enqueue",
        lambda task, bid, owner=None, countdown=0.0: sent.append((task, bid, owner)),
    )
    enqueue_bench(40)
    (batch_id,) = batches.batches_form(provider="openai", model="gpt-4.1-mini").batch_ids
    assert batches.batch_submit(batch_id=batch_id) == "submitted"
    # submit -> first poll: sent with a countdown under a short lease.
    batch = LlmBatch.objects.get(pk=batch_id)
    assert sent[-1][:2] == ("batch_poll", batch_id)
    assert batch.lease_owner == sent[-1][2]
    assert batch.lease_expires_at is not None
    assert (batch.lease_expires_at - timezone.now()).total_seconds() <= batches.HANDOFF_LEASE_S + 1
    _lapse(batch_id)  # that message is lost; the tick takes over once the lease lapses
    owner = _claim("running")
    assert batches.batch_poll(batch_id=batch_id, lease_owner=owner) == "finalizing"
    # poll -> finalize: the same owner, a short lease, the message "lost" (never run).
    batch = LlmBatch.objects.get(pk=batch_id)
    assert sent[-1] == ("batch_finalize", batch_id, owner)
    assert batch.lease_expires_at is not None
    assert (batch.lease_expires_at - timezone.now()).total_seconds() <= batches.HANDOFF_LEASE_S + 1
    # A redelivered poll (the worker died after the commit) sends the finalize again.
    assert batches.batch_poll(batch_id=batch_id, lease_owner=owner) == "finalize_resent"
    assert sent[-1] == ("batch_finalize", batch_id, owner)
    # Once the handoff lease lapses the tick hands the batch to a new finalizer; a stale
    # message with the old owner is then a no-op, and only the new one applies the results.
    _lapse(batch_id)
    new_owner = _claim("finalizing")
    assert new_owner != owner
    assert batches.batch_finalize(batch_id=batch_id, lease_owner=owner) == "not_ours"
    assert batches.batch_finalize(batch_id=batch_id, lease_owner=new_owner) == "finalized"
    assert LlmRequest.objects.filter(batch_id=batch_id, status="succeeded").count() == 40


def test_a_submit_the_worker_terminates_releases_its_claim_soon(simulator, monkeypatch) -> None:
    """F4R (chaos seed 4103): on a Redis restart Celery terminates running acks_late tasks;
    a terminated submit left its batch ``submitting`` under a 600 s lease. The task's
    ``on_retry`` ("cancelled by Celery", in the worker's main process) now releases exactly
    its own claim, and the recovery lookup adopts the provider batch instead of resubmitting."""
    from celery.exceptions import Retry

    from orchestration import tasks

    monkeypatch.setattr(batches, "_enqueue", lambda *a, **k: None)
    enqueue_bench(30)
    (batch_id,) = batches.batches_form(provider="openai", model="gpt-4.1-mini").batch_ids
    real = OpenAIAdapter.submit_batch
    killed: list[str] = []

    def killed_after_create(self, **kwargs):  # the provider accepted it; then SIGTERM
        real(self, **kwargs)
        killed.append("after create")
        raise SystemExit("terminated")

    monkeypatch.setattr(OpenAIAdapter, "submit_batch", killed_after_create)
    task_id = "task-4103"
    with pytest.raises(SystemExit):
        batches.batch_submit(batch_id=batch_id, owner=tasks.submit_owner(task_id))
    monkeypatch.setattr(OpenAIAdapter, "submit_batch", real)
    batch = LlmBatch.objects.get(pk=batch_id)
    assert (batch.status, batch.lease_owner) == ("submitting", tasks.submit_owner(task_id))
    # Another task's cancellation does not touch this claim...
    tasks.batch_submit.on_retry(
        Retry(message="cancelled by Celery"), "other-task", (), {"batch_id": batch_id}, None
    )
    assert LlmBatch.objects.get(pk=batch_id).lease_expires_at == batch.lease_expires_at
    # ...its own does: the lease now ends within the grace period, not after 600 s.
    tasks.batch_submit.on_retry(
        Retry(message="cancelled by Celery"), task_id, (), {"batch_id": batch_id}, None
    )
    batch = LlmBatch.objects.get(pk=batch_id)
    left = (batch.lease_expires_at - timezone.now()).total_seconds()
    assert 0 < left <= batches.CANCELED_TASK_GRACE_S
    _lapse(batch_id)
    LlmBatch.objects.filter(pk=batch_id).update(next_poll_at=timezone.now())
    assert batches.batch_submit(batch_id=batch_id) == "recovered"  # adopted, not resubmitted
    assert killed == ["after create"]


def test_a_direct_runner_the_worker_terminates_releases_its_rows_soon(simulator) -> None:
    """F4R (seed 4104): a runner terminated on a Redis restart held its in-flight rows for
    request_timeout + 60 s; its cancellation now ends them (and the runner lock) in 10 s."""
    from celery.exceptions import Retry

    from orchestration import tasks
    from orchestration.models import SchedulerLock
    from orchestration.transport.leases import lock_acquire
    from orchestration.transport.services import direct

    enqueue_bench(12, route_hint="direct")
    owner = tasks.direct_owner("task-4104")
    lock_acquire(name=direct.runner_lock_name("openai", "gpt-4.1-mini"), owner=owner, ttl_s=600)
    ids = direct._claim(provider="openai", model="gpt-4.1-mini", owner=owner, limit=8, lease_s=600)
    assert len(ids) == 8
    tasks.direct_calls.on_retry(
        Retry(message="cancelled by Celery"),
        "task-4104",
        (),
        {"provider": "openai", "model": "gpt-4.1-mini"},
        None,
    )
    limit = timezone.now() + timedelta(seconds=batches.CANCELED_TASK_GRACE_S)
    leases = LlmRequest.objects.filter(pk__in=ids).values_list("lease_expires_at", flat=True)
    assert all(lease is not None and lease <= limit for lease in leases)
    lock = SchedulerLock.objects.get(name=direct.runner_lock_name("openai", "gpt-4.1-mini"))
    assert lock.expires_at <= limit
    # The rows no other runner claimed are untouched (still pending).
    assert LlmRequest.objects.filter(status="pending").count() == 4


def test_submit_lease_covers_the_calls_and_no_more(settings) -> None:
    """F1: a fixed 600 s submit lease stalled a batch for ten minutes after a kill -9. The
    lease is now two provider timeouts plus the upload at 1 MB/s, and at least a minute."""
    settings.JUDGE_PROVIDER_TIMEOUT_S = 6.0
    assert batches.submit_lease_s(10_000) == batches.SUBMIT_LEASE_MIN_S
    settings.JUDGE_PROVIDER_TIMEOUT_S = 120.0
    assert batches.submit_lease_s(0) == 240.0
    assert batches.submit_lease_s(200_000_000) == 440.0  # a 200 MB shard gets its upload time


def test_a_tick_that_lost_its_connection_releases_its_lock(simulator, monkeypatch) -> None:
    """F5 (matrix seed 6002): Postgres restarted during a tick; the tick's lock release
    failed on the broken connection and no tick ran for TICK_LOCK_TTL_S (then 60 s)."""
    from django.db import connection

    from orchestration.models import SchedulerLock
    from orchestration.transport.services import tick

    def restart_midway(report, dispatch):
        connection.connection.close()  # what the restart does to the socket
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(tick, "_route", restart_midway)
    with pytest.raises(OperationalError):
        tick.tick_run(dispatch=False)
    lock = SchedulerLock.objects.get(name=tick.TICK_LOCK)
    assert lock.expires_at is None, "the tick lock was left held after the restart"
    monkeypatch.undo()
    assert tick.tick_run(dispatch=False).ran  # the next tick runs at once
