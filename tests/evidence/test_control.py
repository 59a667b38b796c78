"""Pause/resume/cancel of window runs, validation, demo helper, handler idempotency, routes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from evidence.models import Evidence, WindowRun
from evidence.services.advance import window_advance
from evidence.services.errors import EvidenceInvalid, EvidenceInvalidState
from evidence.services.handlers import EvidenceHandler
from evidence.services.windows import (
    demo_windows_collect,
    window_collect,
    window_run_cancel,
    window_run_pause,
    window_run_resume,
)
from judge_project.celery import app as celery_app
from orchestration.models import LlmRequest, SchedulerLock, TransportHold
from orchestration.transport.registry import AppliedResult
from orchestration.transport.services.tick import tick_run
from tests.evidence.conftest import drive, make_window


@pytest.mark.django_db(transaction=True)
def test_pause_holds_requests_and_resume_completes(simulator, eager_celery) -> None:
    make_window(evidence_limit=3)
    run = window_collect(tag="w-hu")
    run.refresh_from_db()
    assert run.current_stage == "l1_cleaned"
    window_run_pause(window_run_id=run.pk)
    assert TransportHold.objects.filter(process=run.process).exists()
    for _ in range(3):
        tick_run()
    assert LlmRequest.objects.filter(process=run.process, status="pending").count() == 3
    assert window_advance(window_run_id=run.pk) == "skip_paused"
    resumed = window_run_resume(window_run_id=run.pk)
    assert resumed.status == "running"
    assert not TransportHold.objects.filter(process=run.process).exists()
    run = drive(run.pk)
    assert run.status == "completed"
    with pytest.raises(EvidenceInvalidState):
        window_run_resume(window_run_id=run.pk)


@pytest.mark.django_db(transaction=True)
def test_lost_chain_message_pause_resume_and_reconcile(
    simulator, eager_celery, monkeypatch
) -> None:
    from evidence.services import windows as windows_service

    real_send = windows_service._collect_chain_send
    monkeypatch.setattr(windows_service, "_collect_chain_send", lambda _id: None)  # lost
    make_window("w-a", evidence_limit=2, target_stage="l0_raw")
    make_window("w-b", country="Poland", evidence_limit=2, target_stage="l0_raw")
    paused = window_collect(tag="w-a")
    lost = window_collect(tag="w-b")
    window_run_pause(window_run_id=paused.pk)
    monkeypatch.setattr(windows_service, "_collect_chain_send", real_send)
    # Paused before collection: nothing is collected, even by the reconciler.
    SchedulerLock.objects.filter(name="reconcile:windows").delete()
    tick_run()  # the reconciler re-sends the lost chain of w-b only
    assert drive(lost.pk).status == "completed"
    paused.refresh_from_db()
    assert paused.status == "paused"
    assert paused.collected_at is None
    assert window_run_resume(window_run_id=paused.pk).status == "queued"
    run = drive(paused.pk)
    assert run.status == "completed"
    assert Evidence.objects.filter(window_run=run).count() == 2


@pytest.mark.django_db(transaction=True)
def test_cancel_marks_requests_and_ignores_late_results(simulator, eager_celery) -> None:
    make_window(evidence_limit=3)
    run = window_collect(tag="w-hu")
    canceled = window_run_cancel(window_run_id=run.pk)
    assert canceled.status == "canceled"
    reqs = LlmRequest.objects.filter(process=run.process)
    assert set(reqs.values_list("status", flat=True)) == {"canceled"}
    assert window_advance(window_run_id=run.pk) == "skip_canceled"
    for _ in range(3):
        tick_run()
    assert set(reqs.values_list("status", flat=True)) == {"canceled"}
    assert not Evidence.objects.filter(window_run=run, l1_cleaned__isnull=False).exists()
    # A new collect is allowed once the old run is terminal.
    assert window_collect(tag="w-hu").pk != run.pk


@pytest.mark.django_db
def test_window_create_validation() -> None:
    cases = [
        ({"end_date": dt.date(2025, 12, 31)}, "before start_date"),
        ({"tag": "Bad Tag"}, "not a slug"),
        ({"tag": "2026"}, "all digits"),
        ({"query": "  "}, "query is empty"),
        ({"model": "gpt-9"}, "unknown model"),
        ({"evidence_limit": 0}, "out of range"),
        ({"evidence_limit": 101}, "out of range"),
        ({"target_stage": "l4"}, "unknown target stage"),
        ({"start_date": "2026-13-01"}, "is not a date"),
    ]
    for overrides, message in cases:
        with pytest.raises(EvidenceInvalid, match=message) as err:
            make_window(**overrides)
        assert err.value.fix
    window = make_window(start_date="2026-01-01", end_date="2026-01-01")
    assert window.start_date == window.end_date == dt.date(2026, 1, 1)


@pytest.mark.django_db(transaction=True)
def test_handler_apply_is_idempotent(simulator, eager_celery) -> None:
    make_window(evidence_limit=1)
    run = window_collect(tag="w-hu")
    ev = Evidence.objects.get(window_run=run)
    request = LlmRequest.objects.get(custom_key=f"evidence:{ev.pk}:l1_cleaned")
    handler = EvidenceHandler()
    ok = AppliedResult(
        request_id=request.pk,
        custom_key=request.custom_key,
        attempt_index=1,
        process=run.process,
        stage="l1_cleaned",
        output_text=ev.l0_raw[:200],
    )
    assert handler.apply([ok]) == {}
    late = dataclasses.replace(
        ok, request_id=request.pk + 10_000, attempt_index=2, output_text=ev.l0_raw[:100]
    )
    assert handler.apply([late]) == {}
    ev.refresh_from_db()
    assert ev.l1_cleaned == ev.l0_raw[:200].strip()
    assert ev.l1_request_id == request.pk
    bad = handler.apply(
        [
            AppliedResult(
                request_id=request.pk,
                custom_key="evidence:nope",
                attempt_index=1,
                process=run.process,
                stage="l1_cleaned",
                output_text="x",
            )
        ]
    )
    assert bad[request.pk].error_class == "permanent"


@pytest.mark.django_db(transaction=True)
def test_demo_windows_collect(simulator, eager_celery) -> None:
    runs = demo_windows_collect(tag_prefix="demo", windows=2, per_window=3)
    assert [r.window.tag for r in runs] == ["demo-hungary", "demo-poland"]
    for run in runs:
        assert drive(run.pk).status == "completed"
    again = demo_windows_collect(tag_prefix="demo", windows=2, per_window=3)
    assert [r.pk for r in again] == [r.pk for r in runs]
    assert WindowRun.objects.count() == 2
    assert Evidence.objects.filter(l3_abstracted__isnull=False).count() == 6


def test_task_routes() -> None:
    router = celery_app.amqp.router
    assert router.route({}, "evidence.window_advance")["queue"].name == "control"
    assert router.route({}, "evidence.window_collect")["queue"].name == "provider_io"
