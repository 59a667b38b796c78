"""The verifier must not be vacuous: a clean run passes, and each kind of damage is caught.

One real run (eager Celery, simulator over HTTP) is completed once; then every corruption is
applied inside a transaction, verified, and rolled back, so all cases share one run.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.db import transaction

from orchestration.models import LlmRequest, Run, RunEvent, Score
from orchestration.services.runs import experiment_start
from orchestration.transport.services.tick import tick_run
from orchestration.verify import VerifyReport, verify_process, verify_run, verify_window_run
from tests.pipeline.conftest import make_experiment

pytestmark = pytest.mark.django_db(transaction=True)


class _Rollback(Exception):
    pass


def _completed_run() -> Run:
    run = experiment_start(tag=make_experiment("verify-me"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tick_run()
        run.refresh_from_db()
        if run.status in ("completed", "failed"):
            return run
        time.sleep(0.05)
    raise AssertionError("run did not finish")


def _score_request(run: Run) -> LlmRequest:
    score = Score.objects.filter(run=run).order_by("pk").first()
    assert score is not None
    return LlmRequest.objects.get(pk=score.llm_request_id)


def _delete_artifact(run: Run) -> None:
    Score.objects.filter(run=run).order_by("pk").first().delete()  # type: ignore[union-attr]


def _lose_target(run: Run) -> None:
    req = _score_request(run)
    Score.objects.filter(llm_request_id=req.pk).delete()
    from orchestration.models import ScoreCritic

    ScoreCritic.objects.filter(target_id=int(req.custom_key.split(":")[1])).delete()
    LlmRequest.objects.filter(custom_key__startswith=req.custom_key.rsplit(":", 1)[0]).delete()


def _extra_attempt(run: Run) -> None:
    req = _score_request(run)
    LlmRequest.objects.filter(pk=req.pk).update(attempt_index=2)  # attempt 1 is gone


def _over_limit(run: Run) -> None:
    req = _score_request(run)
    LlmRequest.objects.filter(pk=req.pk).update(max_attempts=0)


def _two_live_attempts(run: Run) -> None:
    req = _score_request(run)
    req.pk = None
    req.attempt_index = 2
    req.status = "pending"
    req.save()


def _pointer_to_failed(run: Run) -> None:
    req = _score_request(run)
    LlmRequest.objects.filter(pk=req.pk).update(status="failed", error_class="permanent")


def _double_advance(run: Run) -> None:
    RunEvent.objects.create(process=run.process, stage="score_gen", event_type="stage_advanced")


def _second_terminal_event(run: Run) -> None:
    RunEvent.objects.create(process=run.process, stage="score_critic", event_type="run_completed")


def _phantom_exhaustion(run: Run) -> None:
    RunEvent.objects.create(
        process=run.process, stage="score_gen", event_type="request_exhausted", custom_key="x"
    )


def _counter_lies(run: Run) -> None:
    Run.objects.filter(pk=run.pk).update(target_count=run.target_count + 1)


def _dangling_batch(run: Run) -> None:
    req = _score_request(run)
    LlmRequest.objects.filter(pk=req.pk).update(batch_id=10**12)


CASES: list[tuple[str, Callable[[Run], None], set[str]]] = [
    ("artifact deleted", _delete_artifact, {"succeeded_without_artifact"}),
    ("target lost", _lose_target, {"lost_target"}),
    ("attempt gap", _extra_attempt, {"attempt_gap"}),
    ("over limit", _over_limit, {"attempt_over_limit"}),
    (
        "two live attempts",
        _two_live_attempts,
        {"non_last_attempt_not_failed", "open_after_terminal"},
    ),
    ("artifact points at failed attempt", _pointer_to_failed, {"artifact_request_mismatch"}),
    ("stage advanced twice", _double_advance, {"stage_advanced_count"}),
    ("two terminal events", _second_terminal_event, {"ledger_terminal_event"}),
    ("ledger invents an exhaustion", _phantom_exhaustion, {"ledger_exhausted_mismatch"}),
    ("counter lies", _counter_lies, {"counter_targets"}),
    ("attempt points at a missing batch", _dangling_batch, {"dangling_reference"}),
]


def _check(
    run: Run, damage: Callable[[Run], None], submissions: dict[str, int] | None = None
) -> VerifyReport:
    holder: list[VerifyReport] = []
    try:
        with transaction.atomic():
            damage(run)
            holder.append(verify_run(run=run, submissions=submissions))
            raise _Rollback
    except _Rollback:
        pass
    return holder[0]


def test_clean_run_passes_and_every_damage_is_caught(simulator, eager_celery) -> None:
    run = _completed_run()
    clean = verify_run(run=run, submissions={})
    assert clean.ok, clean.render()
    assert clean.stats["stages"]["score_gen"]["total"] == run.target_count
    missed = []
    for name, damage, expected in CASES:
        report = _check(run, damage)
        if not expected <= report.codes():
            missed.append(f"{name}: expected {expected}, got {report.codes()}")
    assert not missed, "\n".join(missed)
    # Submissions: an attempt accepted three times is two extra calls, reported with ids.
    req = _score_request(run)
    report = verify_run(run=run, submissions={f"r{req.pk}": 3, "r999999999": 2})
    assert report.codes() == {"extra_submission"}
    (violation,) = report.violations
    assert violation.count == 2
    assert violation.examples[0].startswith(f"r{req.pk} ")
    # The full log: a succeeded attempt the provider never saw is a phantom result.
    report = verify_run(run=run, submissions={}, submissions_complete=True)
    assert "result_without_submission" in report.codes()
    # After everything, the untouched run is still clean (the damage was rolled back).
    assert verify_run(run=run, submissions={}).ok


def test_verify_run_command_output_and_exit_code(simulator, eager_celery) -> None:
    run = _completed_run()
    out = io.StringIO()
    call_command("verify_run", str(run.pk), "--simulator", simulator.url, stdout=out)
    text = out.getvalue()
    assert text.startswith(f"verify run {run.pk} (verify-me): OK")
    assert "score_gen" in text
    out = io.StringIO()
    call_command(
        "verify_run", "verify-me", "--json", "--simulator", simulator.url, "--full-log", stdout=out
    )
    data = json.loads(out.getvalue())
    assert data["ok"] is True
    assert data["violations"] == []
    assert set(data["stats"]["stages"]) == {
        "rubric_gen",
        "rubric_critic",
        "score_gen",
        "score_critic",
    }
    assert data["stats"]["submissions"]["checked"] is True
    Run.objects.filter(pk=run.pk).update(sample_count=99)
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("verify_run", str(run.pk), "--json", stdout=out)
    assert exit_info.value.code == 1
    data = json.loads(out.getvalue())
    assert data["ok"] is False
    assert {v["code"] for v in data["violations"]} >= {"counter_samples"}


def test_transport_process_and_window_run(simulator, eager_celery) -> None:
    """The generic checks: a bench process, and a window run whose artifacts are l1 columns."""
    from evidence.models import Evidence, Window, WindowRun
    from tests.transport.helpers import drive_transport, enqueue_bench

    enqueue_bench(40, route_hint="direct")
    drive_transport()
    assert verify_process(process="bench:1", terminal=True, submissions={}).ok
    import datetime as dt

    window = Window.objects.create(
        tag="w", query="q", country="X", start_date=dt.date(2026, 1, 1),
        end_date=dt.date(2026, 1, 2), model="gpt-4.1-mini",
    )  # fmt: skip
    wr = WindowRun.objects.create(
        window=window, status="completed", materialized_stages=["l1_cleaned"]
    )
    rows = []
    for i in range(3):
        e = Evidence.objects.create(
            window=window, window_run=wr, title=f"t{i}", url=f"https://x/{i}", l0_raw="raw"
        )
        req = LlmRequest.objects.create(
            custom_key=f"evidence:{e.pk}:l1_cleaned", process=f"window:{wr.pk}", stage="l1_cleaned",
            status="succeeded", provider="openai", model="m", provider_model="m", user_prompt="u",
            next_attempt_at="2026-01-01T00:00Z",
        )  # fmt: skip
        Evidence.objects.filter(pk=e.pk).update(l1_cleaned="clean", l1_request_id=req.pk)
        rows.append(e.pk)
    report = verify_window_run(window_run=wr, submissions=None)
    assert report.ok, report.render()
    Evidence.objects.filter(pk=rows[0]).update(l1_cleaned=None, l1_request_id=None)
    report = verify_window_run(window_run=wr, submissions=None)
    assert "succeeded_without_artifact" in report.codes()
