"""Materialize one stage: eligible targets -> prompts -> attempt-1 request rows (bulk).

Eligibility reads artifacts only (DOMAIN.md 3.2 gating), so running this twice inserts
nothing the second time (the request identity is unique). Work is streamed in chunks so a
10^5-target stage never holds all prompts in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from configs_app.registry import ModelInfo
from configs_app.spec import ExperimentSpec
from evidence.models import Evidence
from orchestration.judging.prompts import (
    EvidenceText,
    rubric_critic_prompt,
    rubric_gen_prompt,
    score_critic_prompt,
    score_gen_prompt,
    select_evidence_view,
)
from orchestration.models import Rubric, Run, Sample, ScoreTarget, ScoreTargetItem
from orchestration.transport.services.enqueue import RequestSpec, llm_requests_enqueue

CHUNK = 2000


@dataclass(frozen=True, slots=True)
class StoredStage:
    """A rubric stage as stored in ``Rubric.stages`` (satisfies prompts.StageText)."""

    label: str
    criteria: tuple[str, ...]


def stored_stages(stages: Sequence[dict[str, Any]]) -> list[StoredStage]:
    ordered = sorted(stages, key=lambda s: int(s["stage_number"]))
    return [StoredStage(label=str(s["label"]), criteria=tuple(s["criteria"])) for s in ordered]


def _policy_field(run: Run, model_id: str, name: str, default: Any) -> Any:
    fields = (
        (run.run_config.resolved_policy or {}).get("models", {}).get(model_id, {}).get("fields", {})
    )
    value = fields.get(name, {}).get("value")
    return default if value is None else value


class _SpecFactory:
    """Per-request knobs frozen from the run config (policy + registry entry)."""

    def __init__(self, run: Run, spec: ExperimentSpec, model_id: str) -> None:
        info: ModelInfo = spec.resolved_models()[model_id]
        self.run = run
        self.model_id = model_id
        self.info = info
        mode = str(_policy_field(run, model_id, "batch_mode", "auto"))
        self.route_hint = {"disabled": "direct", "force": "batch"}.get(mode, "auto")
        cap = _policy_field(run, model_id, "output_token_cap", None)
        self.max_output = min(spec.max_output_tokens, int(cap)) if cap else spec.max_output_tokens
        self.max_attempts = int(_policy_field(run, model_id, "max_request_attempts", 3))
        self.params = {
            "backoff_s": float(_policy_field(run, model_id, "retry_backoff_seconds", 60)),
            "jitter": float(_policy_field(run, model_id, "retry_jitter_ratio", 0.2)),
            "input_price_per_mtok": info.input_price_per_mtok,
            "output_price_per_mtok": info.output_price_per_mtok,
            "batch_discount": info.batch_discount,
        }

    def make(self, *, key: str, stage: str, system: str, user: str, version: str) -> RequestSpec:
        return RequestSpec(
            custom_key=key,
            process=self.run.process,
            stage=stage,
            provider=self.info.provider,
            model=self.model_id,
            provider_model=self.info.provider_model,
            system_prompt=system,
            user_prompt=user,
            prompt_version=version,
            max_output_tokens=self.max_output,
            max_attempts=self.max_attempts,
            batchable=self.info.batchable,
            route_hint=self.route_hint,
            params=dict(self.params),
        )


def stage_materialize(*, run: Run, stage: str, spec: ExperimentSpec) -> int:
    """Insert attempt-1 requests for every eligible target of ``stage``; returns inserted."""
    builders = {
        "rubric_gen": _rubric_gen,
        "rubric_critic": _rubric_critic,
        "score_gen": _score_gen,
        "score_critic": _score_critic,
    }
    inserted = 0
    batch: list[RequestSpec] = []
    for request_spec in builders[stage](run, spec):
        batch.append(request_spec)
        if len(batch) >= CHUNK:
            inserted += llm_requests_enqueue(specs=batch).inserted
            batch = []
    if batch:
        inserted += llm_requests_enqueue(specs=batch).inserted
    return inserted


def _rubric_gen(run: Run, spec: ExperimentSpec) -> Iterator[RequestSpec]:
    factory = _SpecFactory(run, spec, spec.rubric.model)
    prompt = rubric_gen_prompt(concept=spec.rubric.concept, scale_size=spec.rubric.scale_size)
    ids = Sample.objects.filter(run=run, rubric__isnull=True).values_list("pk", flat=True)
    for sid in ids.order_by("pk").iterator(chunk_size=CHUNK):
        yield factory.make(
            key=f"sample:{sid}:rubric_gen",
            stage="rubric_gen",
            system=prompt.system,
            user=prompt.user,
            version=prompt.version,
        )


def _rubric_critic(run: Run, spec: ExperimentSpec) -> Iterator[RequestSpec]:
    factory = _SpecFactory(run, spec, spec.rubric.model)
    rows = (
        Rubric.objects.filter(run=run, sample__rubric_critic__isnull=True)
        .order_by("sample_id")
        .values_list("sample_id", "stages")
    )
    for sid, stages in rows.iterator(chunk_size=CHUNK):
        prompt = rubric_critic_prompt(concept=spec.rubric.concept, stages=stored_stages(stages))
        yield factory.make(
            key=f"sample:{sid}:rubric_critic",
            stage="rubric_critic",
            system=prompt.system,
            user=prompt.user,
            version=prompt.version,
        )


class _EvidenceCache:
    """Evidence text per id in the configured view (fetched once per run stage)."""

    def __init__(self, view: str) -> None:
        self.view = view
        self.texts: dict[int, str] = {}

    def load(self, ids: set[int]) -> None:
        missing = ids - self.texts.keys()
        if not missing:
            return
        for row in Evidence.objects.filter(pk__in=missing).values(
            "id", "l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted"
        ):
            self.texts[row["id"]] = select_evidence_view(
                self.view,  # type: ignore[arg-type]
                l0_raw=row["l0_raw"],
                l1_cleaned=row["l1_cleaned"],
                l2_neutralized=row["l2_neutralized"],
                l3_abstracted=row["l3_abstracted"],
            )


def _target_chunks(
    run: Run, qs: Any, cache: _EvidenceCache
) -> Iterator[tuple[list[tuple[Any, ...]], dict[int, list[EvidenceText]], dict[int, Any]]]:
    """Yield (target rows, evidence per target, rubric per sample) chunk by chunk."""
    rubrics: dict[int, tuple[list[StoredStage], dict[str, int]]] = {}
    rows: list[tuple[Any, ...]] = []

    def flush() -> tuple[list[tuple[Any, ...]], dict[int, list[EvidenceText]], dict[int, Any]]:
        target_ids = [r[0] for r in rows]
        items: dict[int, list[tuple[int, int]]] = {}
        for tid, eid, pos in ScoreTargetItem.objects.filter(target_id__in=target_ids).values_list(
            "target_id", "evidence_id", "position"
        ):
            items.setdefault(tid, []).append((pos, eid))
        cache.load({eid for members in items.values() for _, eid in members})
        evidence = {
            tid: [EvidenceText(text=cache.texts[eid]) for _, eid in sorted(members)]
            for tid, members in items.items()
        }
        need = {r[1] for r in rows} - rubrics.keys()
        for sid, stages, mapping in Rubric.objects.filter(sample_id__in=need).values_list(
            "sample_id", "stages", "label_mapping"
        ):
            rubrics[sid] = (stored_stages(stages), dict(mapping))
        return list(rows), evidence, rubrics

    for row in qs.iterator(chunk_size=CHUNK):
        rows.append(row)
        if len(rows) >= CHUNK:
            yield flush()
            rows = []
    if rows:
        yield flush()


def _score_gen(run: Run, spec: ExperimentSpec) -> Iterator[RequestSpec]:
    scoring = spec.scoring
    factory = _SpecFactory(run, spec, scoring.model)
    cache = _EvidenceCache(scoring.evidence_view)
    qs = (
        ScoreTarget.objects.filter(run=run, sample__rubric__isnull=False, score__isnull=True)
        .order_by("pk")
        .values_list("pk", "sample_id", "sample__seed")
    )
    for rows, evidence, rubrics in _target_chunks(run, qs, cache):
        for tid, sid, seed in rows:
            stages, mapping = rubrics[sid]
            prompt = score_gen_prompt(
                evidence_items=evidence[tid],
                stages=stages,
                label_mapping=mapping,
                method=scoring.method,
                abstain_enabled=scoring.abstain_enabled,
                randomizations=scoring.randomizations,
                seed=seed,
            )
            yield factory.make(
                key=f"sample_score_target:{tid}:score_gen",
                stage="score_gen",
                system=prompt.system,
                user=prompt.user,
                version=prompt.version,
            )


def _score_critic(run: Run, spec: ExperimentSpec) -> Iterator[RequestSpec]:
    scoring = spec.scoring
    factory = _SpecFactory(run, spec, scoring.model)
    cache = _EvidenceCache(scoring.evidence_view)
    qs = (
        ScoreTarget.objects.filter(run=run, score__isnull=False, score_critic__isnull=True)
        .order_by("pk")
        .values_list("pk", "sample_id", "sample__seed", "score__decoded_scores")
    )
    for rows, evidence, rubrics in _target_chunks(run, qs, cache):
        for tid, sid, seed, decoded in rows:
            stages, mapping = rubrics[sid]
            prompt = score_critic_prompt(
                evidence_items=evidence[tid],
                stages=stages,
                label_mapping=mapping,
                method=scoring.method,
                randomizations=scoring.randomizations,
                seed=seed,
                decoded_scores=decoded or None,
            )
            yield factory.make(
                key=f"sample_score_target:{tid}:score_critic",
                stage="score_critic",
                system=prompt.system,
                user=prompt.user,
                version=prompt.version,
            )


__all__ = ["StoredStage", "stage_materialize", "stored_stages"]
