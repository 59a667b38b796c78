"""The internal wipe, and rate limits held on direct calls."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestration.models import LlmRequest, Run, Sample
from orchestration.services.errors import InvalidState
from orchestration.services.maintenance import run_wipe
from orchestration.services.runs import experiment_start
from policies.models import Policy
from tests.pipeline.conftest import make_experiment
from tests.pipeline.test_eager_run import drive
from tests.transport.helpers import drive_transport, enqueue_bench

pytestmark = pytest.mark.django_db(transaction=True)


def test_wipe_refuses_active_runs_and_removes_a_finished_one(simulator, eager_celery) -> None:
    tag = make_experiment()
    run = experiment_start(tag=tag)
    with pytest.raises(InvalidState, match="cancel it first"):
        run_wipe(run_id=run.pk)
    run = drive(run.pk)
    report = run_wipe(run_id=run.pk)
    assert report.deleted["runs"] == 1
    assert report.deleted["requests"] > 0
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not Sample.objects.exists()
    assert not LlmRequest.objects.exists()


def test_direct_calls_respect_the_model_rpm(simulator, eager_celery) -> None:
    Policy.objects.update_or_create(
        scope="model", key="gpt-4.1-mini", defaults={"requests_per_minute": 600}
    )
    enqueue_bench(700, route_hint="direct")
    drive_transport(timeout=120)
    starts = sorted(LlmRequest.objects.values_list("started_at", flat=True))
    assert len(starts) == 700
    t0 = starts[0]
    # Token bucket: at most capacity (600) plus the refill (10/s) in any prefix window.
    for window_s in (1, 2, 5, 8):
        in_window = sum(1 for s in starts if s - t0 <= timedelta(seconds=window_s))
        assert in_window <= 600 + 10 * window_s + 8  # + one claim of direct_concurrency
    assert (starts[-1] - t0).total_seconds() >= 8  # the last 100 waited for refill


def test_dollar_budget_blocks_a_stage_whole_and_resume_continues(simulator, eager_celery) -> None:
    from decimal import Decimal

    from orchestration.models import RunEvent
    from orchestration.services.control import run_resume

    tag = make_experiment()
    # Enough for the rubric stages (10 direct calls), not for 18 score targets at 8k out each.
    Policy.objects.update_or_create(
        scope="experiment", key=tag, defaults={"dollar_budget": Decimal("0.05")}
    )
    run = drive(experiment_start(tag=tag).pk)
    assert run.status == "blocked", run.last_error
    assert "dollar budget" in run.last_error
    assert "experiment:" in run.last_error  # names the scope that set it
    blocked_stage = RunEvent.objects.get(process=run.process, event_type="run_blocked").stage
    assert not LlmRequest.objects.filter(process=run.process, stage=blocked_stage).exists()
    Policy.objects.filter(scope="experiment", key=tag).update(dollar_budget=Decimal("50"))
    run_resume(run_id=run.pk)
    run = drive(run.pk)
    assert run.status == "completed"
