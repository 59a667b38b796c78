"""Builders for export tests: a small, hand-crafted completed run written with the ORM.

Why hand-crafted instead of running the pipeline: every number the export and the summary
report must be checkable against data whose answer is known in advance.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from configs_app.services import run_config_create, template_create
from evidence.models import PoolEvidence
from evidence.services.pools import demo_pool_load
from orchestration.models import (
    Experiment,
    LlmRequest,
    Rubric,
    RubricCritic,
    Run,
    RunEvent,
    Sample,
    Score,
    ScoreCritic,
    ScoreTarget,
    ScoreTargetItem,
)

BODY: dict[str, Any] = {
    "rubric": {"model": "gpt-4.1-mini", "scale_size": 4, "concept": "fascism"},
    "scoring": {
        "model": "gpt-4.1-mini",
        "method": "subset",
        "abstain_enabled": True,
        "evidence_view": "l2_neutralized",
        "randomizations": ["shuffle_rubric_order", "anonymize_stages", "hide_label_text"],
        "evidence_bundle_size": 2,
        "bundle_strategy": "window_round_robin",
        "clustering_seed": 7,
    },
    "sample_count": 3,
    "evidence": {"pool_tag": "p"},
}

LABELS = {"Qx7a": 1, "b9Zk": 2, "Mm3p": 3, "z0Lq": 4}
STAGES = [{"stage_number": i, "label": f"S{i}", "criteria": ["a", "b", "c"]} for i in range(1, 5)]


@dataclass
class Crafted:
    """What was built, by name, so tests can look rows up without re-deriving ids."""

    run: Run
    evidence: list[int]
    windows: dict[int, int]
    samples: dict[str, Sample] = field(default_factory=dict)
    targets: dict[str, ScoreTarget] = field(default_factory=dict)


def base_run(*, tag: str = "exp-export", status: str = "completed", sample_count: int = 3) -> Run:
    template = template_create(template_id="t1", body=BODY)
    run_config = run_config_create(
        template=template, resolved_policy={"models": {}, "run": {}}, git_sha="abc123"
    )
    pool = demo_pool_load(tag="p", windows=2, per_window=3)
    experiment = Experiment.objects.create(tag=tag, template=template, pool=pool)
    now = timezone.now()
    return Run.objects.create(
        experiment=experiment,
        run_config=run_config,
        status=status,
        current_stage="score_critic",
        sample_count=sample_count,
        started_at=now,
        completed_at=now if status == "completed" else None,
    )


def req(
    run: Run,
    key: str,
    stage: str,
    attempt: int = 1,
    *,
    status: str = "succeeded",
    error_class: str = "",
    route: str | None = "batch",
    tokens: tuple[int, int] = (100, 20),
    cost: float | None = 0.001,
) -> LlmRequest:
    return LlmRequest.objects.create(
        custom_key=key,
        attempt_index=attempt,
        process=f"run:{run.pk}",
        stage=stage,
        status=status,
        route=route,
        provider="openai",
        model="gpt-4.1-mini",
        provider_model="gpt-4.1-mini-2025-04-14",
        user_prompt="prompt",
        next_attempt_at=timezone.now(),
        error_class=error_class,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=cost,
    )


def _target(c: Crafted, name: str, sample: Sample, index: int, positions: list[int]) -> None:
    ids = [c.evidence[p] for p in positions]
    target = ScoreTarget.objects.create(
        run=c.run,
        sample=sample,
        bundle_index=index,
        bundle_signature="|".join(str(i) for i in sorted(ids)),
    )
    ScoreTargetItem.objects.bulk_create(
        [
            ScoreTargetItem(target=target, evidence_id=eid, window_id=c.windows[eid], position=i)
            for i, eid in enumerate(ids)
        ]
    )
    c.targets[name] = target


def _score(c: Crafted, name: str, decoded: list[int], verdict: str) -> None:
    t = c.targets[name]
    Score.objects.create(
        run=c.run,
        sample=t.sample,
        target=t,
        llm_request_id=1,
        model="gpt-4.1-mini",
        justification=f"because {name}",
        raw_verdict=verdict,
        decoded_scores=decoded,
        abstained=not decoded,
    )


def _critic(c: Crafted, name: str, prob: float) -> None:
    t = c.targets[name]
    ScoreCritic.objects.create(
        run=c.run,
        sample=t.sample,
        target=t,
        llm_request_id=1,
        model="gpt-4.1-mini",
        justification="ok",
        expert_agreement_prob=prob,
    )


def crafted_run(*, status: str = "completed", tag: str = "exp-export") -> Crafted:
    """Three samples, six targets.

    * s1 (rubric + critic 0.8/0.6): t1 = [2,3] subset (critic 0.7), t2 = abstain (critic
      0.9, second attempt after a parse failure), t3 = no score after parse, parse, timeout.
    * s2 (rubric, no critic): t4 = [1] (no critic), t5 = [2].
    * s3 (rubric_gen failed three times on parse): t6 never attempted.
    """
    run = base_run(status=status, tag=tag)
    members = list(
        PoolEvidence.objects.filter(pool=run.experiment.pool)
        .order_by("position")
        .values_list("evidence_id", "evidence__window_id")
    )
    c = Crafted(run=run, evidence=[m[0] for m in members], windows=dict(members))
    for ordinal, seed in ((1, 111), (2, -5), (3, 2**31 - 1)):
        c.samples[f"s{ordinal}"] = Sample.objects.create(
            run=run, ordinal=ordinal, seed=seed, model="gpt-4.1-mini"
        )
    s1, s2, s3 = c.samples["s1"], c.samples["s2"], c.samples["s3"]
    for sample in (s1, s2):
        Rubric.objects.create(
            run=run,
            sample=sample,
            llm_request_id=1,
            model="gpt-4.1-mini",
            concept="fascism",
            scale_size=4,
            justification="j",
            stages=STAGES,
            label_mapping=LABELS,
        )
    RubricCritic.objects.create(
        run=run,
        sample=s1,
        llm_request_id=1,
        model="gpt-4.1-mini",
        justification="j",
        observability_score=0.8,
        discriminability_score=0.6,
    )
    _target(c, "t1", s1, 0, [0, 3])
    _target(c, "t2", s1, 1, [1])
    _target(c, "t3", s1, 2, [2, 4, 5])
    _target(c, "t4", s2, 0, [3])
    _target(c, "t5", s2, 1, [0])
    _target(c, "t6", s3, 0, [1, 4])
    run.target_count = 6
    run.save(update_fields=["target_count"])
    _score(c, "t1", [2, 3], "VERDICT: b9Zk, Mm3p")
    _score(c, "t2", [], "VERDICT: ABSTAIN")
    _score(c, "t4", [1], "VERDICT: Qx7a")
    _score(c, "t5", [2], "VERDICT: b9Zk")
    _critic(c, "t1", 0.7)
    _critic(c, "t2", 0.9)

    # rubric_gen: s1, s2 succeed by batch; s3 fails three times on parse (direct).
    req(run, f"sample:{s1.pk}:rubric_gen", "rubric_gen", cost=0.01)
    req(run, f"sample:{s2.pk}:rubric_gen", "rubric_gen", cost=0.01)
    for attempt in (1, 2, 3):
        req(
            run,
            f"sample:{s3.pk}:rubric_gen",
            "rubric_gen",
            attempt,
            status="failed",
            error_class="parse",
            route="direct",
            cost=0.002,
        )
    # rubric_critic: s1 succeeds, s2's critic fails on timeout (no retries left).
    req(run, f"sample:{s1.pk}:rubric_critic", "rubric_critic")
    req(
        run,
        f"sample:{s2.pk}:rubric_critic",
        "rubric_critic",
        status="failed",
        error_class="timeout",
        tokens=(0, 0),
        cost=None,
    )
    # score_gen
    t = {k: v.pk for k, v in c.targets.items()}
    req(run, f"sample_score_target:{t['t1']}:score_gen", "score_gen")
    req(
        run,
        f"sample_score_target:{t['t2']}:score_gen",
        "score_gen",
        status="failed",
        error_class="parse",
    )
    req(run, f"sample_score_target:{t['t2']}:score_gen", "score_gen", 2, route="direct")
    for attempt, error in ((1, "parse"), (2, "parse"), (3, "timeout")):
        req(
            run,
            f"sample_score_target:{t['t3']}:score_gen",
            "score_gen",
            attempt,
            status="failed",
            error_class=error,
        )
    req(run, f"sample_score_target:{t['t4']}:score_gen", "score_gen")
    req(run, f"sample_score_target:{t['t5']}:score_gen", "score_gen")
    # score_critic: t1, t2 succeed; t4 and t5 critics failed on server errors.
    req(run, f"sample_score_target:{t['t1']}:score_critic", "score_critic")
    req(run, f"sample_score_target:{t['t2']}:score_critic", "score_critic")
    for name in ("t4", "t5"):
        req(
            run,
            f"sample_score_target:{t[name]}:score_critic",
            "score_critic",
            status="failed",
            error_class="server",
        )
    return c


def stage_events(run: Run, start: dt.datetime) -> None:
    """rubric_gen 10 s, rubric_critic 20 s, score_gen 70 s, score_critic 60 s."""
    events = [
        ("run_started", "rubric_gen", 0),
        ("stage_advanced", "rubric_critic", 10),
        ("stage_advanced", "score_gen", 30),
        ("stage_advanced", "score_critic", 100),
        ("run_completed", "score_critic", 160),
    ]
    for event_type, stage, offset in events:
        event = RunEvent.objects.create(process=run.process, stage=stage, event_type=event_type)
        RunEvent.objects.filter(pk=event.pk).update(created_at=start + dt.timedelta(seconds=offset))
