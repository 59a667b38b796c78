"""Transport behaviour against the simulator over HTTP (services driven inline)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from orchestration.models import LlmBatch, LlmRequest
from orchestration.transport.services.batches import batch_submit, batches_form
from tests.transport.helpers import drive_transport, enqueue_bench, sim_get, sim_post

pytestmark = pytest.mark.django_db(transaction=True)


def _one_result_per_key() -> None:
    per_key = (
        LlmRequest.objects.filter(status="succeeded").values("custom_key").annotate(n=Count("id"))
    )
    assert all(row["n"] == 1 for row in per_key)


def test_enqueue_is_idempotent(simulator) -> None:
    assert enqueue_bench(100) == 100
    assert enqueue_bench(100) == 0
    assert LlmRequest.objects.count() == 100


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batches_complete_exactly_once(simulator, eager_celery, provider) -> None:
    enqueue_bench(1200, provider=provider)
    drive_transport()
    assert LlmRequest.objects.filter(status="succeeded").count() == 1200
    _one_result_per_key()
    assert LlmBatch.objects.filter(status="succeeded").count() >= 3  # max 500 per shard
    summary = sim_get(f"{simulator.url}/_sim/submissions?summary=1")
    assert summary["duplicates"] == {} or not summary["duplicates"]


def test_crash_after_create_is_recovered_not_resubmitted(simulator) -> None:
    enqueue_bench(40)
    formed = batches_form(provider="openai", model="gpt-4.1-mini")
    (batch_id,) = formed.batch_ids
    sim_post(
        f"{simulator.url}/_sim/faults",
        {"faults": [{"fault": "drop_connection", "when": "after", "count": 1,
                     "ops": ["batches_create"]}]},
    )  # fmt: skip
    assert batch_submit(batch_id=batch_id) == "unknown_outcome"
    batch = LlmBatch.objects.get(pk=batch_id)
    assert batch.status == "submitting"
    assert batch.provider_batch_id is None
    # The lease lapses (as after a worker crash); the next submit looks the key up instead.
    LlmBatch.objects.filter(pk=batch_id).update(lease_expires_at=timezone.now() - timedelta(1))
    assert batch_submit(batch_id=batch_id) == "recovered"
    batch.refresh_from_db()
    assert batch.status == "running"
    assert batch.provider_batch_id
    summary = sim_get(f"{simulator.url}/_sim/submissions?summary=1")
    assert summary["total"] == 40
    assert not summary["duplicates"]


def test_two_pollers_never_finalize_one_batch(simulator, eager_celery) -> None:
    from orchestration.transport.services.batches import batch_finalize
    from orchestration.transport.services.tick import _claim_leases

    enqueue_bench(60)
    # Eager Celery: forming the shard submits it on commit.
    (batch_id,) = batches_form(provider="openai", model="gpt-4.1-mini").batch_ids
    assert LlmBatch.objects.get(pk=batch_id).status == "running"
    from django.db.models import Q

    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=timezone.now())
    first = _claim_leases("running", free, timezone.now() + timedelta(seconds=60))
    second = _claim_leases("running", free, timezone.now() + timedelta(seconds=60))
    assert [b for b, _ in first] == [batch_id]
    assert second == []
    # A finalize under a lease it does not hold does nothing.
    assert batch_finalize(batch_id=batch_id, lease_owner="someone-else") == "not_ours"


def test_429_and_500_storms_complete_with_backoff(simulator, eager_celery) -> None:
    sim_post(
        f"{simulator.url}/_sim/faults",
        {"faults": [{"fault": "http_429", "rate": 0.3, "retry_after": 2, "ops": ["chat"]},
                    {"fault": "http_500", "rate": 0.2, "ops": ["chat"]}]},
    )  # fmt: skip
    enqueue_bench(40, route_hint="direct", max_attempts=8)
    drive_transport()
    assert LlmRequest.objects.filter(status="succeeded").count() == 40
    failed = LlmRequest.objects.filter(status="failed")
    assert failed.filter(error_class="rate_limit").exists()
    assert failed.filter(error_class="server").exists()
    # A retry after a 429 was scheduled no earlier than retry-after.
    for row in failed.filter(error_class="rate_limit")[:10]:
        nxt = LlmRequest.objects.get(custom_key=row.custom_key, attempt_index=row.attempt_index + 1)
        assert (nxt.created_at - row.completed_at).total_seconds() < 5
    _one_result_per_key()


def test_expired_batch_resubmits_only_missing_rows(simulator, eager_celery) -> None:
    sim_post(
        f"{simulator.url}/_sim/faults",
        {"faults": [{"fault": "batch_expire", "partial": 0.5, "count": 1}]},
    )
    enqueue_bench(100)
    drive_transport()
    assert LlmRequest.objects.filter(status="succeeded").count() == 100
    first = LlmRequest.objects.filter(attempt_index=1)
    done_first = first.filter(status="succeeded").count()
    retried = first.filter(status="failed", error_class="batch").count()
    assert done_first + retried == 100
    assert 20 <= retried <= 80
    # Only the expired rows got a second attempt.
    assert LlmRequest.objects.filter(attempt_index=2).count() == retried
    _one_result_per_key()


def test_parse_failures_exhaust_with_raw_output_kept(simulator, eager_celery, monkeypatch) -> None:
    from orchestration.transport import bench_handler

    monkeypatch.setattr(bench_handler, "REJECT_MARKER", "")  # every output is rejected
    enqueue_bench(4, route_hint="direct", max_attempts=3)
    drive_transport()
    rows = LlmRequest.objects.order_by("custom_key", "attempt_index")
    assert rows.count() == 12  # 3 attempts each, each a separate row
    assert set(rows.values_list("status", flat=True)) == {"failed"}
    assert all(r.output_text for r in rows)  # raw output kept on every failed attempt
    assert set(rows.values_list("error_class", flat=True)) == {"parse"}
    assert not LlmRequest.objects.filter(attempt_index=4).exists()
