"""A whole run through all four stages, services driven inline (eager Celery), simulator HTTP."""

from __future__ import annotations

import time

import pytest

from orchestration.models import LlmBatch, LlmRequest, Run, Score, ScoreCritic
from orchestration.selectors import run_progress
from orchestration.services.runs import experiment_start
from orchestration.transport.services.tick import tick_run
from tests.pipeline.conftest import make_experiment


def drive(run_id: int, *, timeout: float = 120.0) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_run()
        run = Run.objects.get(pk=run_id)
        if run.status in ("completed", "failed", "canceled", "paused", "blocked"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {run_progress(run=run).to_json()}")


@pytest.mark.django_db(transaction=True)
def test_full_run_all_stages(simulator, eager_celery) -> None:
    tag = make_experiment()
    run = experiment_start(tag=tag)
    run = drive(run.pk)
    progress = run_progress(run=run)
    assert run.status == "completed", progress.to_json()
    assert run.target_count == 3 * 6
    for stage in progress.stages:
        assert stage.completed + stage.failed == stage.total
    assert Score.objects.filter(run=run).count() + progress.stage("score_gen").failed == 18
    assert ScoreCritic.objects.filter(run=run).count() >= 1
    assert not LlmRequest.objects.filter(status__in=["pending", "in_flight"]).exists()
    # 3 samples < min_batch_size 30: rubric stages go direct; 18 targets also direct.
    assert LlmRequest.objects.filter(route="direct").exists()
    assert LlmBatch.objects.count() >= 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("model", ["gpt-4.1-mini", "claude-haiku-4.5"])
def test_batch_route_both_providers(simulator, eager_celery, model) -> None:
    from tests.pipeline.conftest import DEMO_BODY

    body = {
        **DEMO_BODY,
        "sample_count": 40,
        "rubric": {**DEMO_BODY["rubric"], "model": model},
        "scoring": {**DEMO_BODY["scoring"], "model": model},
    }
    tag = make_experiment(f"batch-{model}".replace(".", "-"), body=body)
    run = drive(experiment_start(tag=tag).pk, timeout=300)
    progress = run_progress(run=run)
    assert run.status == "completed", progress.to_json()
    assert LlmRequest.objects.filter(route="batch", stage="score_gen").count() >= 240
    batches = LlmBatch.objects.all()
    assert batches.count() >= 4
    assert set(batches.values_list("status", flat=True)) == {"succeeded"}
    # Exactly one artifact per target and every request accounted for.
    assert Score.objects.filter(run=run).count() == progress.stage("score_gen").completed
    assert (
        sum(b.succeeded_count + b.failed_count for b in batches)
        == LlmRequest.objects.filter(route="batch").count()
    )
    submissions = simulator.submission_counts() if hasattr(simulator, "submission_counts") else None
    if submissions is not None:
        assert max(submissions.values()) == 1
