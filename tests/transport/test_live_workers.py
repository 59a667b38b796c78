"""Real worker and beat processes: 10k requests through batches, broker wiped mid-run."""

from __future__ import annotations

import pytest
from django.db.models import Count

from orchestration.models import LlmBatch, LlmRequest
from tests.live import flush_broker, wait_for
from tests.transport.helpers import enqueue_bench, sim_get, unsettled

pytestmark = pytest.mark.django_db(transaction=True)


def test_10k_requests_through_batches_survive_broker_wipe(simulator, live_procs) -> None:
    assert enqueue_bench(10_000) == 10_000
    live_procs.worker(concurrency=2)
    live_procs.beat()
    wait_for(
        lambda: LlmBatch.objects.filter(status__in=["running", "finalizing", "succeeded"]).exists(),
        timeout=60,
        procs=live_procs,
        what="the first batch to be submitted",
    )
    flush_broker()  # every queued message is gone (F4): the tick must rebuild from Postgres
    wait_for(lambda: unsettled() == 0, timeout=240, procs=live_procs, what="all requests to settle")
    assert LlmRequest.objects.filter(status="succeeded").count() == 10_000
    dupes = (
        LlmRequest.objects.filter(status="succeeded")
        .values("custom_key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not dupes.exists()
    summary = sim_get(f"{simulator.url}/_sim/submissions?summary=1")
    assert summary["total"] == 10_000
    assert not summary["duplicates"]
    assert set(LlmBatch.objects.values_list("status", flat=True)) == {"succeeded"}
