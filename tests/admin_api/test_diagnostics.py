"""``run_diagnostics``: failed attempts vs terminal failures, on crafted request rows."""

from __future__ import annotations

import pytest

from orchestration.diagnostics import run_diagnostics
from orchestration.models import Rubric, Run, Sample, Score, ScoreTarget
from tests.admin_api.conftest import MakeRequest

pytestmark = pytest.mark.django_db


def _rubric(run: Run, sample: Sample, request_id: int) -> Rubric:
    return Rubric.objects.create(
        run=run,
        sample=sample,
        llm_request_id=request_id,
        model="gpt-4.1-mini",
        concept="fascism",
        scale_size=4,
        justification="j",
        stages=[],
        label_mapping={},
    )


def _crafted(run: Run, make_request: MakeRequest) -> dict[str, object]:
    """The scenario every test below reads:

    * sample A rubric_gen: timeout, then success with a rubric  -> 1 failed attempt, recovered;
    * sample B rubric_gen: parse x3, no rubric                  -> 3 failed attempts, terminal;
    * target T1 score_gen: rate_limit, then a pending retry     -> failed attempt, alive;
    * target T2 score_gen: server error, last attempt, but a score exists (a late apply)
                                                                 -> failed attempt, not terminal;
    * target T3 score_gen: permanent, last attempt, no score    -> terminal;
    * target T4 score_gen: canceled                             -> neither.
    """
    a, b = Sample.objects.filter(run=run).order_by("ordinal")[:2]
    t1, t2, t3, t4 = ScoreTarget.objects.filter(run=run).order_by("pk")[:4]
    make_request(run, f"sample:{a.pk}:rubric_gen", 1, "failed", error_class="timeout",
                 error_message="read timed out")  # fmt: skip
    ok = make_request(run, f"sample:{a.pk}:rubric_gen", 2, "succeeded", output_text="{}")
    _rubric(run, a, ok.pk)
    for attempt in (1, 2, 3):
        make_request(
            run,
            f"sample:{b.pk}:rubric_gen",
            attempt,
            "failed",
            error_class="parse",
            error_message=f"no JSON object in output (attempt {attempt})",
            output_text="I refuse to answer in JSON",
        )
    make_request(run, f"sample_score_target:{t1.pk}:score_gen", 1, "failed",
                 error_class="rate_limit", error_message="429 slow down")  # fmt: skip
    make_request(run, f"sample_score_target:{t1.pk}:score_gen", 2, "pending")
    late = make_request(run, f"sample_score_target:{t2.pk}:score_gen", 1, "failed",
                        error_class="server", error_message="500")  # fmt: skip
    Score.objects.create(
        run=run,
        sample=t2.sample,
        target=t2,
        llm_request_id=late.pk,
        model="gpt-4.1-mini",
        justification="j",
        raw_verdict="VERDICT: A",
        decoded_scores=[1],
    )
    make_request(run, f"sample_score_target:{t3.pk}:score_gen", 1, "failed",
                 error_class="permanent", error_message="400 invalid request")  # fmt: skip
    make_request(run, f"sample_score_target:{t4.pk}:score_gen", 1, "canceled",
                 error_class="canceled", error_message="canceled by operator")  # fmt: skip
    return {"b": b, "t3": t3}


def test_groups_failed_attempts_by_stage_and_class(run: Run, make_request: MakeRequest) -> None:
    _crafted(run, make_request)
    diag = run_diagnostics(run=run)
    groups = {(g.stage, g.error_class): (g.count, g.keys) for g in diag.failed_attempts}
    assert groups == {
        ("rubric_gen", "parse"): (3, 1),
        ("rubric_gen", "timeout"): (1, 1),
        ("score_gen", "rate_limit"): (1, 1),
        ("score_gen", "server"): (1, 1),
        ("score_gen", "permanent"): (1, 1),
    }
    assert diag.failed_attempts_total == 7
    # Stage order first, then the biggest group.
    assert [(g.stage, g.error_class) for g in diag.failed_attempts][:2] == [
        ("rubric_gen", "parse"),
        ("rubric_gen", "timeout"),
    ]


def test_terminal_failures_are_last_attempts_without_artifacts(
    run: Run, make_request: MakeRequest
) -> None:
    rows = _crafted(run, make_request)
    diag = run_diagnostics(run=run)
    terminal = {(g.stage, g.error_class): g.count for g in diag.terminal_failures}
    assert terminal == {("rubric_gen", "parse"): 1, ("score_gen", "permanent"): 1}
    assert diag.terminal_failures_total == 2
    keys = {k.custom_key: k.attempt_index for k in diag.terminal_keys}
    b, t3 = rows["b"], rows["t3"]
    assert keys == {
        f"sample:{b.pk}:rubric_gen": 3,  # type: ignore[attr-defined]
        f"sample_score_target:{t3.pk}:score_gen": 1,  # type: ignore[attr-defined]
    }


def test_each_group_carries_one_sample_raw_error(run: Run, make_request: MakeRequest) -> None:
    _crafted(run, make_request)
    diag = run_diagnostics(run=run)
    parse = next(g for g in diag.failed_attempts if g.error_class == "parse")
    assert parse.sample is not None
    assert parse.sample.attempt_index == 3  # the newest row represents the group
    assert parse.sample.error_message == "no JSON object in output (attempt 3)"
    assert parse.sample.output_excerpt == "I refuse to answer in JSON"
    terminal_parse = next(g for g in diag.terminal_failures if g.error_class == "parse")
    assert terminal_parse.sample == parse.sample
    data = diag.to_json()
    assert data["has_terminal_failures"] is True
    assert data["failed_attempts"]["total"] == 7
    assert data["terminal_failures"]["keys_truncated"] is False


def test_key_limit_truncates_the_list_not_the_counts(run: Run, make_request: MakeRequest) -> None:
    _crafted(run, make_request)
    diag = run_diagnostics(run=run, key_limit=1)
    assert len(diag.terminal_keys) == 1
    assert diag.terminal_failures_total == 2
    assert diag.to_json()["terminal_failures"]["keys_truncated"] is True


def test_query_count_does_not_grow_with_rows(
    run: Run, make_request: MakeRequest, django_assert_max_num_queries: object
) -> None:
    _crafted(run, make_request)
    for target in ScoreTarget.objects.filter(run=run).order_by("pk")[4:]:
        for attempt in (1, 2, 3):
            make_request(run, f"sample_score_target:{target.pk}:score_gen", attempt, "failed",
                         error_class="server", error_message="503")  # fmt: skip
    with django_assert_max_num_queries(4):  # type: ignore[operator]
        diag = run_diagnostics(run=run)
    assert diag.terminal_failures_total == 2 + ScoreTarget.objects.filter(run=run).count() - 4


def test_empty_run_has_no_failures(run: Run) -> None:
    data = run_diagnostics(run=run).to_json()
    assert data["failed_attempts"] == {"total": 0, "groups": []}
    assert data["terminal_failures"]["total"] == 0
    assert data["has_terminal_failures"] is False
