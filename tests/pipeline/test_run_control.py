"""Run control and policies: pause_after, pause/resume mid-stage, cancel mid-batch,
concurrent starts, batch starts with bad tags, partial-failure policies, status JSON."""

from __future__ import annotations

import json
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from orchestration.models import LlmBatch, LlmRequest, Run, RunEvent, Score, TransportHold
from orchestration.selectors import run_progress
from orchestration.services.control import run_cancel, run_pause, run_resume
from orchestration.services.errors import ActiveRunExists
from orchestration.services.runs import experiment_start, experiments_start
from orchestration.transport.services.tick import tick_run
from policies.models import Policy
from tests.pipeline.conftest import DEMO_BODY, make_experiment
from tests.pipeline.test_eager_run import drive
from tests.transport.helpers import sim_post

pytestmark = pytest.mark.django_db(transaction=True)

BATCHY = {**DEMO_BODY, "sample_count": 30}  # 30 samples: rubric stages go through batches


def test_pause_after_stops_at_the_boundary_and_resume_continues(simulator, eager_celery) -> None:
    tag = make_experiment()
    run = experiment_start(tag=tag, pause_after="rubric_critic")
    run = drive(run.pk)
    assert run.status == "paused"
    assert run.current_stage == "rubric_critic"
    assert not LlmRequest.objects.filter(stage="score_gen").exists()
    run_resume(run_id=run.pk)
    run = drive(run.pk)
    assert run.status == "completed"
    assert RunEvent.objects.filter(process=run.process, event_type="stage_advanced").count() == 3


def test_pause_mid_stage_lets_inflight_batches_finish(simulator, eager_celery) -> None:
    sim_post(f"{simulator.url}/_sim/faults", {"batch_duration_s": 1.5, "faults": []})
    tag = make_experiment(body=BATCHY)
    run = experiment_start(tag=tag)
    deadline = time.monotonic() + 30
    while not LlmBatch.objects.filter(status="running").exists():
        tick_run()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run_pause(run_id=run.pk)
    assert TransportHold.objects.filter(process=run.process).exists()
    # Drive: the running batch completes and is applied; no new stage starts.
    deadline = time.monotonic() + 30
    while LlmBatch.objects.exclude(status__in=["succeeded", "failed", "canceled"]).exists():
        tick_run()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run.refresh_from_db()
    assert run.status == "paused"
    assert run.current_stage == "rubric_gen"
    assert run_progress(run=run).stage("rubric_gen").completed == 30
    run_resume(run_id=run.pk)
    run = drive(run.pk, timeout=120)
    assert run.status == "completed"


def test_cancel_mid_batch_explains_every_row(simulator, eager_celery) -> None:
    sim_post(f"{simulator.url}/_sim/faults", {"batch_duration_s": 30, "faults": []})
    tag = make_experiment(body=BATCHY)
    run = experiment_start(tag=tag)
    deadline = time.monotonic() + 30
    while not LlmBatch.objects.filter(status="running").exists():
        tick_run()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run = run_cancel(run_id=run.pk)
    assert run.status == "canceled"
    rows = LlmRequest.objects.filter(process=run.process)
    assert rows.exists()
    assert set(rows.values_list("status", flat=True)) <= {"canceled", "succeeded", "failed"}
    assert all(r.error_message for r in rows.filter(status="canceled"))
    # The provider batch is canceled too (every member canceled), then closed by the tick.
    deadline = time.monotonic() + 30
    while LlmBatch.objects.exclude(status__in=["succeeded", "failed", "canceled"]).exists():
        tick_run()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert LlmBatch.objects.filter(provider_status__in=["cancelled", "cancelling"]).exists()
    assert not LlmRequest.objects.filter(status__in=["pending", "in_flight"]).exists()


def test_concurrent_starts_create_exactly_one_run(simulator) -> None:
    tag = make_experiment()
    results: list[str] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            experiment_start(tag=tag)
            outcome = "started"
        except ActiveRunExists:
            outcome = "active_run_exists"
        finally:
            connection.close()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=start) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("started") == 1
    assert results.count("active_run_exists") == 49
    assert Run.objects.filter(experiment__tag=tag).count() == 1


def test_batch_start_reports_bad_tags_and_starts_the_rest(simulator) -> None:
    make_experiment("good-a")
    make_experiment("good-b", pool_tag="pool-a")
    result = experiments_start(tags=["good-a", "nope", "good-b", "good-a"])
    started = {item["tag"] for item in result.started}
    assert started == {"good-a", "good-b"}
    failures = {(i["tag"], i["error"]["code"]) for i in result.failed}
    assert failures == {("nope", "not_found"), ("good-a", "active_run_exists")}


def _malformed_everywhere(simulator, rate: float) -> None:
    sim_post(
        f"{simulator.url}/_sim/faults",
        {"seed": 3, "faults": [{"fault": "malformed_output", "rate": rate, "ops": ["chat"]}]},
    )


def test_parse_failures_exhaust_and_fail_run_policy_fails(simulator, eager_celery) -> None:
    tag = make_experiment()
    Policy.objects.update_or_create(
        scope="experiment", key=tag, defaults={"max_request_attempts": 2}
    )
    _malformed_everywhere(simulator, 1.0)
    run = drive(experiment_start(tag=tag).pk)
    assert run.status == "failed"
    assert "rubric_gen" in run.last_error
    failed = LlmRequest.objects.filter(process=run.process, status="failed")
    assert failed.count() == 3 * 2  # 3 samples x 2 attempts, every attempt kept
    assert all(r.output_text for r in failed)  # raw output kept
    assert set(failed.values_list("error_class", flat=True)) == {"parse"}


def test_continue_policy_completes_with_partial_failures(simulator, eager_celery) -> None:
    tag = make_experiment()
    Policy.objects.update_or_create(
        scope="experiment",
        key=tag,
        defaults={"max_request_attempts": 1, "partial_failure_policy": "continue"},
    )
    _malformed_everywhere(simulator, 0.25)
    run = drive(experiment_start(tag=tag).pk)
    progress = run_progress(run=run)
    assert run.status in {"completed", "failed"}, progress.to_json()
    total_failed = sum(s.failed for s in progress.stages)
    assert total_failed > 0
    if run.status == "completed":
        assert Score.objects.filter(run=run).count() == progress.stage("score_gen").completed
    else:  # continue fails a run only when a whole stage produced nothing
        assert any(s.completed == 0 and s.failed for s in progress.stages)


def test_status_and_watch_json(simulator, eager_celery) -> None:
    tag = make_experiment()
    run = drive(experiment_start(tag=tag).pk)
    out = StringIO()
    call_command("experiments", "status", tag, "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["run_id"] == run.pk
    assert data["status"] == "completed"
    assert data["terminal"] is True
    assert [s["stage"] for s in data["stages"]] == [
        "rubric_gen",
        "rubric_critic",
        "score_gen",
        "score_critic",
    ]
    for stage in data["stages"]:
        assert {"total", "completed", "failed", "pending", "in_flight", "retries"} <= set(stage)
    out = StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("experiments", "watch", tag, "--json", "--interval", "0.1", stdout=out)
    assert exc.value.code == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    assert lines[-1]["status"] == "completed"


def test_unknown_tag_is_a_clear_error() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"\[not_found\].*no run found"):
        call_command("experiments", "status", "no-such-experiment")
    with pytest.raises(ActiveRunExists.__mro__[1]):  # ServiceError
        experiment_start(tag="no-such-experiment")
