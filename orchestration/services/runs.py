"""Creating experiments and starting runs (ARCHITECTURE.md 4, step 2).

``experiment_start`` is one transaction: lock the experiment row; refuse with
``active_run_exists`` when a run is active (no auto-cancel); check the spec, the evidence and
the environment (preflight) before any row is written; freeze the run config (template body,
resolved policy, code version, spec_signature); create the run, its seeded samples and every
score target (bundled per DOMAIN.md 3.2, with the 20k-token guard); enqueue ``advance`` after
commit. The partial unique index on active runs backs the lock: even a caller that skipped
the lock could not create a second active run.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from configs_app.models import ConfigTemplate
from configs_app.preflight import preflight_for_spec
from configs_app.services import run_config_create, template_get, template_ref_parse
from configs_app.spec import ExperimentSpec, SpecError, parse_spec
from evidence.bundling import (
    Bundle,
    BundleTooLargeError,
    EvidenceRef,
    build_bundles,
    bundle_signature,
    check_token_guard,
    estimate_bundle_tokens,
)
from evidence.models import BundlePlan, BundlePlanItem, Evidence, Pool, PoolEvidence
from judge_project.prng import mulberry32, to_int32
from orchestration.models import (
    ACTIVE_RUN_STATUSES,
    STAGE_ORDER,
    Experiment,
    Run,
    RunEvent,
    RunStatus,
    Sample,
    ScoreTarget,
    ScoreTargetItem,
)
from orchestration.services.errors import ActiveRunExists, NotFound, ServiceError, StartRefused
from policies.models import Team
from policies.resolver import policy_resolve

logger = logging.getLogger(__name__)

STAGES = STAGE_ORDER

_ADJECTIVES = (
    "amber", "brisk", "calm", "daring", "eager", "fair", "gentle", "hardy", "keen", "lucid",
    "mellow", "nimble", "plucky", "quiet", "rapid", "steady", "tidy", "vivid", "witty", "zesty",
)  # fmt: skip
_NOUNS = (
    "badger", "comet", "delta", "ember", "falcon", "glacier", "harbor", "island", "juniper",
    "kestrel", "lagoon", "meadow", "nebula", "orchid", "prairie", "quarry", "river", "summit",
    "tundra", "willow",
)  # fmt: skip
# A tag must contain a letter: an all-digit reference always means a run id.
_TAG_RE = re.compile(r"^(?=[a-z0-9_-]*[a-z])[a-z0-9][a-z0-9_-]{0,99}$")


def experiment_tag_generate() -> str:
    """A human-friendly unique-enough tag: ``adjective-noun-xxxxxx`` like the original."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(3)}"


def experiment_create(
    *,
    template_ref: str,
    pool_tag: str | None = None,
    tag: str | None = None,
    team_slug: str | None = None,
    bundle_plan_tag: str | None = None,
) -> Experiment:
    """Create an experiment from ``template_id[@version]`` (latest version when omitted).

    The pool defaults to the spec's ``evidence.pool_tag``; the bundle plan must belong to the
    same pool (as in the original's ``initExperiment``).
    """
    try:
        template_id, version = template_ref_parse(template_ref)
    except ValueError as exc:
        raise StartRefused(
            f"bad template reference {template_ref!r}: {exc}",
            fix="use template_id or template_id@version, e.g. demo-fascism@2",
        ) from exc
    try:
        template = template_get(template_id=template_id, version=version)
    except ConfigTemplate.DoesNotExist as exc:
        raise NotFound(
            f"config template {template_ref!r} does not exist",
            fix="import it first: manage.py configs import <file>",
        ) from exc
    spec = parse_spec(template.config_body)
    pool_tag = pool_tag or spec.evidence.pool_tag
    if not pool_tag:
        raise StartRefused(
            "no pool given and the spec has no evidence.pool_tag",
            fix="pass --pool <tag> or set evidence.pool_tag in the config",
        )
    pool = Pool.objects.filter(tag=pool_tag).first()
    if pool is None:
        raise NotFound(
            f"pool {pool_tag!r} does not exist",
            fix="create it from evidence (manage.py windows pool ...) or fix the tag",
        )
    plan = None
    plan_tag = bundle_plan_tag or spec.evidence.bundle_plan_tag
    if plan_tag:
        plan = BundlePlan.objects.filter(tag=plan_tag).first()
        if plan is None:
            raise NotFound(f"bundle plan {plan_tag!r} does not exist", fix="create it first")
        if plan.pool_id != pool.pk:
            raise StartRefused(
                f"bundle plan {plan_tag!r} belongs to another pool",
                fix=f"use a plan built from pool {pool_tag!r}",
            )
    team = None
    if team_slug:
        team = Team.objects.filter(slug=team_slug).first()
        if team is None:
            raise NotFound(f"team {team_slug!r} does not exist", fix="create it in the admin")
    tag = tag or experiment_tag_generate()
    if not _TAG_RE.match(tag):
        raise StartRefused(
            f"experiment tag {tag!r} is not a slug",
            fix="use lowercase letters, digits, '-' and '_' (max 100 characters, at least "
            "one letter)",
        )
    try:
        with transaction.atomic():
            return Experiment.objects.create(
                tag=tag, template=template, pool=pool, bundle_plan=plan, team=team
            )
    except IntegrityError as exc:
        raise StartRefused(
            f"experiment tag {tag!r} already exists", fix="choose another tag"
        ) from exc


@dataclass(frozen=True, slots=True)
class StartResult:
    started: list[dict[str, Any]]
    failed: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"started": self.started, "failed": self.failed}


def experiments_start(*, tags: Sequence[str], pause_after: str | None = None) -> StartResult:
    """Start several experiments; one tag's failure never blocks the others."""
    started: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for tag in tags:
        try:
            run = experiment_start(tag=tag, pause_after=pause_after)
        except ServiceError as exc:
            failed.append({"tag": tag, "error": exc.to_dict()})
        else:
            started.append({"tag": tag, "run_id": run.pk})
    return StartResult(started=started, failed=failed)


def resolve_run_policy(*, experiment: Experiment, spec: ExperimentSpec) -> dict[str, Any]:
    """Freeze the effective policy for every model the run uses, with provenance.

    Shape: ``{"models": {model_id: <EffectivePolicy.to_json()>}, "run": {...}}``. Run-level
    knobs (partial-failure policy) come from the scoring model's resolution, which includes
    the experiment scope.
    """
    team = experiment.team.slug if experiment.team else None
    models: dict[str, Any] = {}
    for model_id, info in spec.resolved_models().items():
        eff = policy_resolve(
            team=team, provider=info.provider, model=model_id, experiment=experiment.tag
        )
        models[model_id] = eff.to_json()
    scoring = policy_resolve(
        team=team,
        provider=spec.resolved_models()[spec.scoring.model].provider,
        model=spec.scoring.model,
        experiment=experiment.tag,
    )
    return {
        "models": models,
        "run": {"partial_failure_policy": scoring.partial_failure_policy or "fail_run"},
    }


def experiment_start(*, tag: str, pause_after: str | None = None) -> Run:
    """Start one run of ``tag`` (see module docstring). Raises a :class:`ServiceError`."""
    if pause_after is not None and pause_after not in STAGES:
        raise StartRefused(
            f"unknown pause_after stage {pause_after!r}", fix=f"use one of {', '.join(STAGES)}"
        )
    try:
        with transaction.atomic():
            experiment = (
                Experiment.objects.select_for_update(of=("self",))
                .select_related("template", "pool", "bundle_plan", "team")
                .filter(tag=tag)
                .first()
            )
            if experiment is None:
                raise NotFound(
                    f"experiment {tag!r} does not exist",
                    fix="list experiments with `manage.py experiments list`",
                )
            active = Run.objects.filter(experiment=experiment, status__in=ACTIVE_RUN_STATUSES)
            existing = active.values_list("pk", flat=True).first()
            if existing is not None:
                raise ActiveRunExists(
                    f"experiment {tag!r} already has an active run ({existing})",
                    fix="wait for it, or pause/cancel it first",
                    run_id=existing,
                )
            run = _start_locked(experiment, pause_after)
    except IntegrityError as exc:
        if "one_active_run_per_experiment" not in str(exc):
            raise
        # The partial unique index caught a concurrent start that bypassed the lock.
        raise ActiveRunExists(
            f"experiment {tag!r} already has an active run", fix="wait, pause or cancel it"
        ) from exc
    return run


def _start_locked(experiment: Experiment, pause_after: str | None) -> Run:
    try:
        spec = parse_spec(experiment.template.config_body)
    except SpecError as exc:
        raise StartRefused(
            f"config {experiment.template} is invalid: {exc}",
            fix="import a corrected version and recreate the experiment",
        ) from exc
    preflight = preflight_for_spec(spec)
    if preflight.missing:
        raise StartRefused(
            "preflight failed: " + "; ".join(f"{m.name}: {m.reason}" for m in preflight.missing),
            fix="; ".join(sorted({m.fix for m in preflight.missing})),
            missing=[m.name for m in preflight.missing],
        )
    pool_refs = _pool_refs(experiment.pool)
    if not pool_refs:
        raise StartRefused(f"pool {experiment.pool.tag!r} is empty", fix="add evidence to the pool")
    resolved = resolve_run_policy(experiment=experiment, spec=spec)
    run_config = run_config_create(template=experiment.template, resolved_policy=resolved)
    stop_after = pause_after or spec.pause_after
    now = timezone.now()
    run = Run.objects.create(
        experiment=experiment,
        run_config=run_config,
        status=RunStatus.QUEUED,
        pause_after=stop_after,
        sample_count=spec.sample_count,
        created_at=now,
    )
    base_seed = secrets.randbits(32)
    rng = mulberry32(base_seed)
    samples = Sample.objects.bulk_create(
        [
            Sample(
                run=run,
                ordinal=i + 1,
                seed=to_int32(int(rng() * 4294967296)),
                model=spec.scoring.model,
            )
            for i in range(spec.sample_count)
        ],
        batch_size=2000,
    )
    target_count = _targets_create(run, experiment, spec, samples, pool_refs)
    run.target_count = target_count
    run.save(update_fields=["target_count"])
    RunEvent.objects.create(
        process=run.process,
        stage="",
        event_type="run_created",
        payload={
            "experiment": experiment.tag,
            "run_config_id": str(run_config.pk),
            "spec_signature": run_config.spec_signature,
            "samples": spec.sample_count,
            "targets": target_count,
            "base_seed": base_seed,
        },
    )
    from orchestration import tasks

    run_id = run.pk
    transaction.on_commit(lambda: tasks.run_advance.delay(run_id=run_id))
    return run


def _pool_refs(pool: Pool) -> list[EvidenceRef]:
    """Pool members in insertion order with every view's text (for clustering and the guard)."""
    ids = list(
        PoolEvidence.objects.filter(pool=pool)
        .order_by("position")
        .values_list("evidence_id", flat=True)
    )
    rows = {
        e["id"]: e
        for e in Evidence.objects.filter(pk__in=ids).values(
            "id", "window_id", "l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted"
        )
    }
    refs = []
    for eid in ids:
        row = rows[eid]
        texts: dict[str, str] = {
            view: str(row[view])
            for view in ("l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted")
            if row[view]
        }
        refs.append(EvidenceRef(evidence_id=eid, window_id=row["window_id"], texts=texts))
    return refs


def _plan_bundles(plan: BundlePlan, refs: list[EvidenceRef]) -> list[Bundle]:
    by_id = {r.evidence_id: r for r in refs}
    bundles: dict[int, list[tuple[int, int]]] = {}
    for index, position, eid in BundlePlanItem.objects.filter(plan=plan).values_list(
        "bundle_index", "position", "evidence_id"
    ):
        bundles.setdefault(index, []).append((position, eid))
    return [
        Bundle(bundle_index=i, items=[by_id[eid] for _, eid in sorted(members)])
        for i, members in sorted(bundles.items())
    ]


def _ordered_chunks(refs: list[EvidenceRef], size: int) -> list[Bundle]:
    """No strategy: pool order, chunked (a bundle size of 1 = one target per evidence)."""
    return [
        Bundle(bundle_index=i, items=refs[start : start + size])
        for i, start in enumerate(range(0, len(refs), size))
    ]


def _targets_create(
    run: Run,
    experiment: Experiment,
    spec: ExperimentSpec,
    samples: list[Sample],
    refs: list[EvidenceRef],
) -> int:
    scoring = spec.scoring
    view = scoring.evidence_view
    size = scoring.evidence_bundle_size
    strategy = scoring.bundle_strategy
    per_sample = strategy == "window_round_robin" and (
        experiment.bundle_plan is None or experiment.bundle_plan.strategy == "window_round_robin"
    )
    shared: list[Bundle] | None = None
    if not per_sample:
        if experiment.bundle_plan is not None:
            shared = _plan_bundles(experiment.bundle_plan, refs)
        elif strategy is None:
            shared = _ordered_chunks(refs, size)
        else:
            shared = build_bundles(
                strategy, refs, bundle_size=size, seed=scoring.clustering_seed or 0, view=view
            )
        _guard(shared, view)
    total = 0
    for start in range(0, len(samples), 200):
        targets: list[ScoreTarget] = []
        members: list[list[EvidenceRef]] = []
        for sample in samples[start : start + 200]:
            if per_sample:
                bundles = build_bundles(
                    "window_round_robin", refs, bundle_size=size, seed=sample.seed, view=view
                )
                _guard(bundles, view)
            else:
                assert shared is not None
                bundles = shared
            for bundle in bundles:
                targets.append(
                    ScoreTarget(
                        run=run,
                        sample=sample,
                        bundle_index=bundle.bundle_index,
                        bundle_signature=bundle_signature(bundle.evidence_ids),
                        est_tokens=estimate_bundle_tokens(bundle, view),
                    )
                )
                members.append(bundle.items)
        created = ScoreTarget.objects.bulk_create(targets, batch_size=5000)
        ScoreTargetItem.objects.bulk_create(
            [
                ScoreTargetItem(
                    target_id=target.pk,
                    evidence_id=ref.evidence_id,
                    window_id=ref.window_id,
                    position=pos,
                )
                for target, items in zip(created, members, strict=True)
                for pos, ref in enumerate(items)
            ],
            batch_size=5000,
        )
        total += len(created)
    return total


def _guard(bundles: list[Bundle], view: str) -> None:
    try:
        check_token_guard(bundles, view)
    except BundleTooLargeError as exc:
        raise StartRefused(str(exc), fix="use a smaller evidence_bundle_size or view") from exc
