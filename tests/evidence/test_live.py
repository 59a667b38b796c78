"""Real worker and beat processes: the collect -> advance chain, routing and on_commit for real.

Eager Celery hides serialisation, routing and ``on_commit`` (STYLE.md trap 8); here a window is
collected by a real ``celery worker`` (all queues) driven by a real ``celery beat`` tick, with
the broker wiped mid-run so the reconciler has to re-drive the window from Postgres.
"""

from __future__ import annotations

import pytest
from django.db.models import Count

from evidence.models import Evidence, WindowRun
from evidence.services.windows import window_collect
from orchestration.models import LlmRequest
from tests.evidence.conftest import make_window
from tests.live import flush_broker, wait_for


@pytest.mark.django_db(transaction=True)
def test_window_on_real_worker_and_beat(simulator, live_procs) -> None:
    make_window("w-live", evidence_limit=5)
    make_window("w-wiped", country="Poland", evidence_limit=4)
    live_procs.worker(concurrency=2)
    live_procs.beat()
    first = window_collect(tag="w-live")  # the chain is sent after commit, to the real broker
    wait_for(
        lambda: WindowRun.objects.get(pk=first.pk).status in ("completed", "failed"),
        timeout=120,
        procs=live_procs,
        what="the first window to finish",
    )
    flush_broker()
    second = window_collect(tag="w-wiped")
    flush_broker()  # the chain message is gone before any worker saw it: Postgres re-drives it
    wait_for(
        lambda: WindowRun.objects.get(pk=second.pk).status in ("completed", "failed"),
        timeout=120,
        procs=live_procs,
        what="the second window to finish after the broker wipe",
    )
    for run, count in ((first, 5), (second, 4)):
        run.refresh_from_db()
        assert run.status == "completed", run.last_error
        assert Evidence.objects.filter(window_run=run, l3_abstracted__isnull=False).count() == count
    dupes = (
        LlmRequest.objects.filter(status="succeeded")
        .values("custom_key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not dupes.exists()
