"""Failure paths: killed workers, upstream failures, length violations, search problems."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from evidence.models import Evidence, WindowRun
from evidence.prompts import prompt_task_id
from evidence.selectors import window_progress
from evidence.services.advance import window_advance
from evidence.services.windows import window_collect, window_run_collect, windows_reconcile
from orchestration.models import LlmRequest, SchedulerLock
from orchestration.simulator.faults import parse_faults
from tests.evidence.conftest import drive, make_window, responder_failing

# Titles of two of the six "fascism / Hungary / Jan 2026" corpus articles (deterministic).
DOOMED = ("proposed lowering", "passed a budget")


def _task(system: str, user: str) -> str:
    found = prompt_task_id(system, user)
    return found[0] if found else ""


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_restart_after_killed_worker_mid_stage(simulator, eager_celery, fast_retries) -> None:
    make_window(evidence_limit=5)
    run = window_collect(tag="w-hu")  # eager chain: collect, then advance materializes l1
    run.refresh_from_db()
    assert run.status == "running"
    assert run.current_stage == "l1_cleaned"
    keys = list(LlmRequest.objects.filter(process=run.process).values_list("custom_key", flat=True))
    assert len(keys) == 5
    # A worker claimed every l1 call for a direct run and died: leases expired, no results.
    past = timezone.now() - timedelta(minutes=5)
    LlmRequest.objects.filter(process=run.process).update(
        status="in_flight", route="direct", lease_owner="direct:dead:1:x", lease_expires_at=past
    )
    # Re-driving advance (duplicated messages, reconciler) creates nothing new.
    for _ in range(3):
        assert window_advance(window_run_id=run.pk) == "waiting"
    assert LlmRequest.objects.filter(process=run.process).count() == 5
    run = drive(run.pk)
    assert run.status == "completed", window_progress(run=run).to_json()
    rows = LlmRequest.objects.filter(process=run.process, stage="l1_cleaned")
    # Attempt 1 of each key failed as a timeout (lease expired), attempt 2 succeeded.
    assert (
        sorted(rows.filter(attempt_index=1).values_list("error_class", flat=True))
        == ["timeout"] * 5
    )
    assert rows.filter(attempt_index=2, status="succeeded").count() == 5
    assert rows.filter(status="succeeded").values("custom_key").distinct().count() == 5
    assert Evidence.objects.filter(window_run=run).count() == 5
    assert Evidence.objects.filter(window_run=run, l3_abstracted__isnull=False).count() == 5


@pytest.mark.django_db(transaction=True)
def test_killed_during_collect_is_redriven(simulator, eager_celery) -> None:
    make_window(evidence_limit=3)
    run = window_collect(tag="w-hu")
    run.refresh_from_db()
    assert run.collected_at is not None
    # Pretend the collect worker died mid-search: the run is queued with an expired lease.
    Evidence.objects.filter(window_run=run).delete()
    LlmRequest.objects.filter(process=run.process).delete()
    WindowRun.objects.filter(pk=run.pk).update(
        status="queued",
        current_stage="l0_raw",
        materialized_stages=[],
        collected_at=None,
        collect_lease_owner="collect:dead",
        collect_lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    SchedulerLock.objects.filter(name="reconcile:windows").delete()
    assert windows_reconcile() == 1  # re-sends the chain (eager: collect + advance inline)
    assert window_run_collect(window_run_id=run.pk) == "skip"  # a late duplicate
    run = drive(run.pk)
    assert run.status == "completed"
    assert Evidence.objects.filter(window_run=run).count() == 3
    assert run.collect_attempts == 2


def _empty_for_doomed_l1(system: str, user: str) -> str | None:
    if _task(system, user) == "l1_clean" and any(t in user for t in DOOMED):
        return "   "
    return None


@pytest.mark.django_db(transaction=True)
def test_upstream_failures_are_skipped_downstream(sim_factory, eager_celery, fast_retries) -> None:
    sim_factory(responder=responder_failing(_empty_for_doomed_l1))
    make_window(evidence_limit=6)
    run = drive(window_collect(tag="w-hu").pk)
    progress = window_progress(run=run)
    assert run.status == "completed", progress.to_json()
    l1, l2, l3 = progress.stages
    assert (l1.total, l1.completed, l1.failed) == (6, 4, 2)
    assert (l2.total, l2.completed, l2.failed, l2.skipped) == (4, 4, 0, 2)
    assert (l3.total, l3.completed, l3.failed, l3.skipped) == (4, 4, 0, 2)
    assert progress.to_json()["has_failures"] is True
    doomed = Evidence.objects.filter(window_run=run, l1_cleaned__isnull=True)
    assert doomed.count() == 2
    for ev in doomed:
        # Both attempts failed as parse errors with the raw output kept; nothing downstream.
        attempts = LlmRequest.objects.filter(custom_key=f"evidence:{ev.pk}:l1_cleaned")
        assert sorted(attempts.values_list("attempt_index", "status", "error_class")) == [
            (1, "failed", "parse"),
            (2, "failed", "parse"),
        ]
        assert attempts.first().output_text == "   "
        assert not LlmRequest.objects.filter(custom_key__startswith=f"evidence:{ev.pk}:l2").exists()


def _all_l1_empty(system: str, user: str) -> str | None:
    return "" if _task(system, user) == "l1_clean" else None


@pytest.mark.django_db(transaction=True)
def test_stage_with_no_completion_fails_the_window(sim_factory, eager_celery, fast_retries) -> None:
    sim_factory(responder=responder_failing(_all_l1_empty))
    make_window(evidence_limit=3)
    run = drive(window_collect(tag="w-hu").pk)
    assert run.status == "failed"
    assert "l1_cleaned" in run.last_error
    assert "all 3 eligible evidence failed" in run.last_error
    assert not LlmRequest.objects.filter(stage="l2_neutralized").exists()


def _long_l2(system: str, user: str) -> str | None:
    if _task(system, user) != "l2_neutralize":
        return None
    body = user.split("<input_text>", 1)[1].split("</input_text>", 1)[0].strip()
    return f"Neutralized Summary:\n{body}\n{body}"  # ~200% of the input: violates 80-95%


@pytest.mark.django_db(transaction=True)
def test_length_violation_retried_then_kept_with_note(
    sim_factory, eager_celery, fast_retries
) -> None:
    sim_factory(responder=responder_failing(_long_l2))
    make_window(evidence_limit=2)
    run = drive(window_collect(tag="w-hu").pk)
    assert run.status == "completed", window_progress(run=run).to_json()
    for ev in Evidence.objects.filter(window_run=run):
        assert ev.l2_neutralized
        assert not ev.l2_neutralized.startswith("Neutralized")
        assert ev.l2_length_note.startswith("kept on attempt 2: l2_neutralized: output is")
        first = LlmRequest.objects.get(
            custom_key=f"evidence:{ev.pk}:l2_neutralized", attempt_index=1
        )
        assert (first.status, first.error_class) == ("failed", "parse")
        assert first.output_text.startswith("Neutralized Summary:")
        assert "expected 80%-95%" in first.error_message
        assert (
            ev.l2_request_id
            == LlmRequest.objects.get(
                custom_key=f"evidence:{ev.pk}:l2_neutralized", attempt_index=2
            ).pk
        )
        assert ev.l3_abstracted  # downstream continued from the kept output


@pytest.mark.django_db(transaction=True)
def test_zero_results_complete_with_zero_counts(simulator, eager_celery) -> None:
    make_window(query="nothing __zero__", evidence_limit=5)
    run = drive(window_collect(tag="w-hu").pk)
    progress = window_progress(run=run).to_json()
    assert run.status == "completed"
    assert (progress["search_count"], progress["evidence_count"], progress["dropped_count"]) == (
        0,
        0,
        0,
    )
    assert not LlmRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_search_provider_failure_fails_the_run(simulator, eager_celery) -> None:
    make_window(query="fascism __error__")
    run = drive(window_collect(tag="w-hu").pk)
    assert run.status == "failed"
    assert run.last_error.startswith("search failed: Firecrawl search failed (server)")
    assert "simulated search failure" in run.last_error
    assert not Evidence.objects.exists()
    assert simulator.state.calls["firecrawl.search"] == 2  # one retry for a 5xx


@pytest.mark.django_db(transaction=True)
def test_search_fault_rule_then_retry_succeeds(simulator, eager_celery) -> None:
    simulator.state.faults.replace(
        parse_faults([{"fault": "http_500", "count": 1, "ops": ["search"]}])
    )
    make_window(evidence_limit=2, target_stage="l0_raw")
    run = drive(window_collect(tag="w-hu").pk)
    assert run.status == "completed"
    assert Evidence.objects.filter(window_run=run).count() == 2
    assert simulator.state.calls["firecrawl.search"] == 2
