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


def test_429s_do_not_use_up_attempts(simulator, eager_celery) -> None:
    """Six 429s over two keys allowed two attempts each: both keys still succeed."""
    from orchestration.verify import verify_process

    sim_post(
        f"{simulator.url}/_sim/faults",
        {"faults": [{"fault": "http_429", "count": 6, "retry_after": 0, "ops": ["chat"]}]},
    )
    enqueue_bench(2, route_hint="direct", max_attempts=2)
    drive_transport()
    assert LlmRequest.objects.filter(status="succeeded").count() == 2
    limited = LlmRequest.objects.filter(status="failed", error_class="rate_limit")
    assert limited.count() == 6
    for key in ("bench:0", "bench:1"):
        rows = list(LlmRequest.objects.filter(custom_key=key).order_by("attempt_index"))
        n_429 = sum(r.error_class == "rate_limit" for r in rows)
        assert rows[-1].status == "succeeded"
        assert rows[-1].max_attempts == 2 + n_429  # each 429 gave the attempt back
    _one_result_per_key()
    report = verify_process(process="bench:1", terminal=True)
    assert report.ok, report.violations


def test_429_extensions_are_capped(simulator, eager_celery) -> None:
    """A 429 storm ends: after ``rate_limit_retries`` extensions a 429 counts again."""
    from orchestration.models import RunEvent

    sim_post(
        f"{simulator.url}/_sim/faults",
        {"faults": [{"fault": "http_429", "rate": 1.0, "retry_after": 0, "ops": ["chat"]}]},
    )
    enqueue_bench(1, route_hint="direct", max_attempts=2, params={"rate_limit_retries": 2})
    drive_transport()
    rows = list(LlmRequest.objects.filter(custom_key="bench:0").order_by("attempt_index"))
    # attempts 1 and 2 extended the limit (2 -> 3 -> 4); 3 and 4 counted: exhausted at 4.
    assert [r.max_attempts for r in rows] == [2, 3, 4, 4]
    assert {r.status for r in rows} == {"failed"}
    events = RunEvent.objects.filter(process="bench:1", custom_key="bench:0")
    assert events.filter(event_type="request_exhausted").count() == 1
    assert events.filter(payload__attempt_not_counted=True).count() == 2


def test_verifier_flags_a_limit_raised_without_a_429(simulator, eager_celery) -> None:
    from orchestration.verify import verify_process

    sim_post(
        f"{simulator.url}/_sim/faults",
        {"faults": [{"fault": "http_500", "count": 1, "ops": ["chat"]}]},
    )
    enqueue_bench(1, route_hint="direct", max_attempts=2)
    drive_transport()
    assert verify_process(process="bench:1", terminal=True).ok
    LlmRequest.objects.filter(custom_key="bench:0", attempt_index=2).update(max_attempts=3)
    report = verify_process(process="bench:1", terminal=True)
    assert [v.code for v in report.violations] == ["attempt_limit_changed"]
