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


def test_failed_finalize_does_not_hold_its_batch_for_the_whole_lease(
    simulator, monkeypatch
) -> None:
    monkeypatch.setattr(batches, "_enqueue", lambda *a, **k: None)  # no broker: drive by hand
    enqueue_bench(60)
    (batch_id,) = batches.batches_form(provider="openai", model="gpt-4.1-mini").batch_ids
    assert batches.batch_submit(batch_id=batch_id) == "submitted"
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=timezone.now())
    (claimed,) = _claim_leases("running", free, timezone.now() + timedelta(seconds=60))
    owner = claimed[1]
    assert batches.batch_poll(batch_id=batch_id, lease_owner=owner) == "finalizing"

    real = OpenAIAdapter.iter_results

    def dies_midway(self, info):  # the database goes away after some rows were read
        for n, row in enumerate(real(self, info)):
            if n == 10:
                raise OperationalError("server closed the connection unexpectedly")
            yield row

    monkeypatch.setattr(OpenAIAdapter, "iter_results", dies_midway)
    with pytest.raises(OperationalError):
        batches.batch_finalize(batch_id=batch_id, lease_owner=owner)
    batch = LlmBatch.objects.get(pk=batch_id)
    assert batch.status == "finalizing"
    assert LlmRequest.objects.filter(batch_id=batch_id, status="in_flight").count() == 60
    # The tick must be able to re-dispatch it soon, not after FINALIZE_LEASE_S (300 s).
    held_for = (
        (batch.lease_expires_at - timezone.now()).total_seconds() if batch.lease_expires_at else 0
    )
    assert held_for <= 60, f"a failed finalize keeps its lease for another {held_for:.0f}s"
