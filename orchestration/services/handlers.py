"""Result handlers for the judging stages (registered with the transport by custom_key prefix).

Apply is artifact-first and idempotent: artifacts are inserted with ``ignore_conflicts`` on
their one-per-target unique constraint, so a result applied twice (a re-streamed file, a
redelivered task) leaves exactly one artifact and the request is simply marked succeeded.
Parse failures are returned as rejections: the transport stores the raw output and the error
on the attempt row and schedules the next attempt.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from configs_app.spec import ExperimentSpec, parse_spec
from orchestration.judging.labels import build_label_mapping
from orchestration.judging.parsers import (
    ParseError,
    parse_expert_agreement,
    parse_quality,
    parse_rubric,
    parse_verdict,
)
from orchestration.models import Rubric, RubricCritic, Run, Sample, Score, ScoreCritic, ScoreTarget
from orchestration.transport.registry import AppliedResult, ExhaustedKey, Rejection

PARSE = "parse"


def _key_id(custom_key: str) -> int:
    return int(custom_key.split(":")[1])


class _Specs:
    """Run id -> (spec, model ids), loaded once per chunk."""

    def __init__(self) -> None:
        self._specs: dict[int, ExperimentSpec] = {}

    def for_runs(self, run_ids: set[int]) -> dict[int, ExperimentSpec]:
        missing = run_ids - self._specs.keys()
        if missing:
            for rid, body in Run.objects.filter(pk__in=missing).values_list(
                "pk", "run_config__config_body"
            ):
                self._specs[rid] = parse_spec(body)
        return {rid: self._specs[rid] for rid in run_ids}


def _run_id(process: str) -> int:
    return int(process.split(":", 1)[1])


class SampleHandler:
    """``sample:<id>:rubric_gen`` and ``sample:<id>:rubric_critic``."""

    def apply(self, results: Sequence[AppliedResult]) -> dict[int, Rejection]:
        specs = _Specs().for_runs({_run_id(r.process) for r in results})
        sample_ids = [_key_id(r.custom_key) for r in results]
        samples = {
            s["pk"]: s
            for s in Sample.objects.filter(pk__in=sample_ids).values("pk", "run_id", "seed")
        }
        rejections: dict[int, Rejection] = {}
        rubrics: list[Rubric] = []
        critics: list[RubricCritic] = []
        for result in results:
            sid = _key_id(result.custom_key)
            sample = samples.get(sid)
            if sample is None:
                rejections[result.request_id] = Rejection("permanent", f"sample {sid} is gone")
                continue
            spec = specs[sample["run_id"]]
            try:
                if result.stage == "rubric_gen":
                    parsed = parse_rubric(result.output_text, scale_size=spec.rubric.scale_size)
                    rubrics.append(
                        Rubric(
                            run_id=sample["run_id"],
                            sample_id=sid,
                            llm_request_id=result.request_id,
                            model=spec.rubric.model,
                            concept=spec.rubric.concept,
                            scale_size=spec.rubric.scale_size,
                            justification=parsed.reasoning,
                            stages=[
                                {
                                    "stage_number": s.stage_number,
                                    "label": s.label,
                                    "criteria": list(s.criteria),
                                }
                                for s in parsed.stages
                            ],
                            label_mapping=build_label_mapping(
                                spec.rubric.scale_size,
                                anonymize="anonymize_stages" in spec.scoring.randomizations,
                                seed=sample["seed"],
                            ),
                        )
                    )
                elif result.stage == "rubric_critic":
                    quality = parse_quality(result.output_text)
                    critics.append(
                        RubricCritic(
                            run_id=sample["run_id"],
                            sample_id=sid,
                            llm_request_id=result.request_id,
                            model=spec.rubric.model,
                            justification=quality.reasoning,
                            observability_score=quality.observability_score,
                            discriminability_score=quality.discriminability_score,
                        )
                    )
                else:
                    rejections[result.request_id] = Rejection(
                        "permanent", f"unknown sample stage {result.stage!r}"
                    )
            except ParseError as exc:
                rejections[result.request_id] = Rejection(PARSE, str(exc))
        Rubric.objects.bulk_create(rubrics, ignore_conflicts=True)
        RubricCritic.objects.bulk_create(critics, ignore_conflicts=True)
        return rejections

    def exhausted(self, keys: Sequence[ExhaustedKey]) -> None:
        """Nothing to store: a sample without a rubric is derived as failed (and blocks)."""


class TargetHandler:
    """``sample_score_target:<id>:score_gen`` and ``...:score_critic``."""

    def apply(self, results: Sequence[AppliedResult]) -> dict[int, Rejection]:
        specs = _Specs().for_runs({_run_id(r.process) for r in results})
        target_ids = [_key_id(r.custom_key) for r in results]
        targets: dict[int, dict[str, Any]] = {
            t["pk"]: dict(t)
            for t in ScoreTarget.objects.filter(pk__in=target_ids).values(
                "pk", "run_id", "sample_id"
            )
        }
        mappings = dict(
            Rubric.objects.filter(
                sample_id__in={t["sample_id"] for t in targets.values()}
            ).values_list("sample_id", "label_mapping")
        )
        rejections: dict[int, Rejection] = {}
        scores: list[Score] = []
        critics: list[ScoreCritic] = []
        by_stage: dict[str, int] = defaultdict(int)
        for result in results:
            tid = _key_id(result.custom_key)
            target = targets.get(tid)
            if target is None:
                rejections[result.request_id] = Rejection("permanent", f"target {tid} is gone")
                continue
            spec = specs[target["run_id"]]
            by_stage[result.stage] += 1
            try:
                if result.stage == "score_gen":
                    verdict = parse_verdict(
                        result.output_text,
                        method=spec.scoring.method,
                        label_mapping=mappings.get(target["sample_id"]),
                        abstain_enabled=spec.scoring.abstain_enabled,
                    )
                    scores.append(
                        Score(
                            run_id=target["run_id"],
                            sample_id=target["sample_id"],
                            target_id=tid,
                            llm_request_id=result.request_id,
                            model=spec.scoring.model,
                            justification=verdict.justification,
                            raw_verdict=verdict.raw_verdict,
                            decoded_scores=list(verdict.decoded_scores or []),
                            abstained=verdict.abstained,
                        )
                    )
                elif result.stage == "score_critic":
                    agreement = parse_expert_agreement(result.output_text)
                    critics.append(
                        ScoreCritic(
                            run_id=target["run_id"],
                            sample_id=target["sample_id"],
                            target_id=tid,
                            llm_request_id=result.request_id,
                            model=spec.scoring.model,
                            justification=agreement.reasoning,
                            expert_agreement_prob=agreement.expert_agreement_prob,
                        )
                    )
                else:
                    rejections[result.request_id] = Rejection(
                        "permanent", f"unknown target stage {result.stage!r}"
                    )
            except ParseError as exc:
                rejections[result.request_id] = Rejection(PARSE, str(exc))
        Score.objects.bulk_create(scores, ignore_conflicts=True, batch_size=2000)
        ScoreCritic.objects.bulk_create(critics, ignore_conflicts=True, batch_size=2000)
        return rejections

    def exhausted(self, keys: Sequence[ExhaustedKey]) -> None:
        """Nothing to store: state is derived from artifacts and attempt rows."""
