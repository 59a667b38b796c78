"""run_summary on crafted data: every number is known in advance (see builders.crafted_run)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestration.summary import render_summary, run_summary
from tests.export.builders import Crafted, base_run, stage_events

pytestmark = pytest.mark.django_db


def test_verdict_geometry(crafted: Crafted) -> None:
    s = run_summary(run=crafted.run)
    assert (s["targets"], s["scored"], s["failed_targets"]) == (6, 4, 2)
    v = s["verdicts"]
    # Scores: [2,3], [], [1], [2] -> a subset counts once per selected stage; stage 4 is 0.
    assert v["distribution"] == {"1": 1, "2": 2, "3": 1, "4": 0}
    assert v["abstained"] == 1
    assert v["abstain_rate"] == pytest.approx(1 / 4)
    assert v["mean_subset_size"] == pytest.approx(4 / 3)
    assert v["singleton_rate"] == pytest.approx(2 / 3)
    assert (v["scale_size"], v["method"]) == (4, "subset")
    assert s["critics"]["mean_expert_agreement"] == pytest.approx(0.8)
    assert s["critics"]["mean_rubric_observability"] == pytest.approx(0.8)
    assert s["critics"]["mean_rubric_discriminability"] == pytest.approx(0.6)
    assert s["spec_signature"] == crafted.run.run_config.spec_signature


def test_attempts_failures_tokens_cost(crafted: Crafted) -> None:
    stages = run_summary(run=crafted.run)["stages"]
    assert list(stages) == ["rubric_gen", "rubric_critic", "score_gen", "score_critic"]
    rg, rc, sg, sc = (stages[k] for k in stages)
    assert (rg["attempts"], rg["retries"], rg["failed_attempts"], rg["parse_failures"]) == (
        5,
        2,
        3,
        3,
    )
    assert rg["parse_failure_rate"] == pytest.approx(3 / 5)
    assert rg["cost_usd"] == pytest.approx(0.026)
    assert (rg["input_tokens"], rg["output_tokens"]) == (500, 100)
    assert (rc["attempts"], rc["failed_attempts"], rc["parse_failure_rate"]) == (2, 1, 0.0)
    assert rc["cost_usd"] == pytest.approx(0.001)  # a null cost adds nothing
    assert (sg["attempts"], sg["retries"], sg["failed_attempts"], sg["parse_failures"]) == (
        8,
        3,
        4,
        3,
    )
    assert sg["parse_failure_rate"] == pytest.approx(3 / 8)
    assert (sc["attempts"], sc["parse_failure_rate"]) == (4, 0.0)


def test_totals_and_routes(crafted: Crafted) -> None:
    s = run_summary(run=crafted.run)
    t = s["totals"]
    assert t["cost_usd"] == pytest.approx(0.039)
    assert (t["attempts"], t["retries"]) == (19, 5)
    assert (t["input_tokens"], t["output_tokens"]) == (1800, 360)
    assert t["parse_failure_rate"] == pytest.approx(6 / 19)
    assert s["routes"]["batch"]["requests"] == 15
    assert s["routes"]["direct"]["requests"] == 4
    assert s["routes"]["direct"]["cost_usd"] == pytest.approx(0.007)
    assert sum(r["cost_usd"] for r in s["routes"].values()) == pytest.approx(0.039)


def test_durations_from_events(crafted: Crafted) -> None:
    assert all(st["duration_s"] is None for st in run_summary(run=crafted.run)["stages"].values())
    stage_events(crafted.run, timezone.now() - dt.timedelta(hours=1))
    stages = run_summary(run=crafted.run)["stages"]
    assert {k: v["duration_s"] for k, v in stages.items()} == {
        "rubric_gen": pytest.approx(10),
        "rubric_critic": pytest.approx(20),
        "score_gen": pytest.approx(70),
        "score_critic": pytest.approx(60),
    }


def test_constant_number_of_queries(crafted: Crafted) -> None:
    with CaptureQueriesContext(connection) as ctx:
        run_summary(run=crafted.run)
    assert len(ctx.captured_queries) <= 10


def test_empty_run(db: None) -> None:
    s = run_summary(run=base_run())
    assert s["targets"] == 0
    assert s["verdicts"]["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 0}
    assert s["verdicts"]["abstain_rate"] is None
    assert s["verdicts"]["mean_subset_size"] is None
    assert s["totals"]["cost_usd"] == 0
    assert s["stages"]["score_gen"]["parse_failure_rate"] is None
    assert "run " in render_summary(s)


def test_render(crafted: Crafted) -> None:
    stage_events(crafted.run, timezone.now() - dt.timedelta(hours=1))
    text = render_summary(run_summary(run=crafted.run))
    assert f"run {crafted.run.pk} (exp-export)" in text
    assert "1:1 2:2 3:1 4:0" in text
    assert "abstain_rate=0.250" in text
    assert "parse_fail=0.375" in text
    assert "total cost=$0.0390" in text
    assert "batch=15 direct=4" in text
    assert "duration=70s" in text
