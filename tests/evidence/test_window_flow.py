"""A window from search to l3 through the real transport, simulator over HTTP, eager Celery."""

from __future__ import annotations

import pytest

from evidence.models import Evidence, WindowRun
from evidence.prompts import check_length_invariant
from evidence.selectors import window_progress
from evidence.services.advance import window_advance
from evidence.services.windows import window_collect, window_run_collect
from orchestration.models import LlmRequest, RunEvent
from tests.evidence.conftest import drive, make_window

STAGES = ("l1_cleaned", "l2_neutralized", "l3_abstracted")


@pytest.mark.django_db(transaction=True)
def test_window_from_search_to_l3(simulator, eager_celery) -> None:
    make_window(evidence_limit=6)
    run = window_collect(tag="w-hu")
    assert run.status == "queued"
    run = drive(run.pk)
    progress = window_progress(run=run)
    assert run.status == "completed", progress.to_json()
    assert progress.evidence_count == 6
    assert progress.search_count == 6
    assert progress.dropped_count == 0
    for stage in progress.stages:
        assert (stage.total, stage.completed, stage.failed, stage.pending) == (6, 6, 0, 0)
        assert stage.status == "settled"
    rows = list(Evidence.objects.filter(window_run=run))
    assert len(rows) == 6
    for ev in rows:
        assert ev.url.startswith("https://news.example/hungary/")
        assert ev.l1_cleaned
        assert ev.l2_neutralized
        assert ev.l3_abstracted
        # Prefixes stripped; invariants met; request ids recorded.
        assert not ev.l2_neutralized.lower().startswith("neutralized summary")
        assert not ev.l3_abstracted.lower().startswith("abstracted summary")
        assert check_length_invariant("l1_cleaned", ev.l0_raw, ev.l1_cleaned) is None
        assert check_length_invariant("l2_neutralized", ev.l1_cleaned, ev.l2_neutralized) is None
        assert check_length_invariant("l3_abstracted", ev.l2_neutralized, ev.l3_abstracted) is None
        assert (ev.l1_length_note, ev.l2_length_note, ev.l3_length_note) == ("", "", "")
        for stage, rid in (
            ("l1_cleaned", ev.l1_request_id),
            ("l2_neutralized", ev.l2_request_id),
            ("l3_abstracted", ev.l3_request_id),
        ):
            req = LlmRequest.objects.get(pk=rid)
            assert req.custom_key == f"evidence:{ev.pk}:{stage}"
            assert req.process == f"window:{run.pk}"
            assert req.status == "succeeded"
    # One request per (evidence, stage); nothing left in flight.
    assert LlmRequest.objects.filter(process=run.process).count() == 18
    assert not LlmRequest.objects.filter(status__in=["pending", "in_flight"]).exists()
    events = set(RunEvent.objects.filter(process=run.process).values_list("event_type", flat=True))
    assert {"window_run_created", "collect_completed", "window_run_completed"} <= events
    data = progress.to_json()
    assert data["terminal"] is True
    assert data["completed_count"] == 6


@pytest.mark.django_db(transaction=True)
def test_collect_twice_is_one_run(simulator, eager_celery) -> None:
    make_window(evidence_limit=4)
    first = window_collect(tag="w-hu")
    second = window_collect(tag="w-hu")
    assert first.pk == second.pk
    assert WindowRun.objects.count() == 1
    # Duplicate collect/advance messages are no-ops.
    assert window_run_collect(window_run_id=first.pk) == "skip"
    before = LlmRequest.objects.count()
    for _ in range(3):
        window_advance(window_run_id=first.pk)
    assert LlmRequest.objects.count() == before
    run = drive(first.pk)
    assert run.status == "completed"
    assert Evidence.objects.filter(window_run=run).count() == 4
    assert LlmRequest.objects.filter(process=run.process).count() == 12
    assert (
        LlmRequest.objects.filter(process=run.process).values("custom_key").distinct().count() == 12
    )
    # Once the run is finished, collecting again starts a new run (and only one).
    again = window_collect(tag="w-hu")
    assert again.pk != run.pk
    assert again.status == "queued"
    assert window_collect(tag="w-hu").pk == again.pk
