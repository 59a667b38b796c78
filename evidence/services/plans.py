"""Bundle plans: a pool bundled once by a shared strategy, reused by every run that names it.

``bundle_plan_create`` (DOMAIN.md 2, ``bundle_plans``): an identical plan (same
``plan_signature``: strategy, version, normalized source view, size, seed *and* the pool's
membership in order) is reused, not recreated, and reported with ``created=False``; a tag that
already names a different plan is refused. The bundles themselves come from
``evidence.bundling.build_bundles`` and are stored as ``BundlePlanItem`` rows, except for
``window_round_robin``, whose bundles depend on each sample's seed and are therefore built per
sample at run start (the plan row is only the recipe).

Pool order: like the original's plan materializer (``getPoolEvidenceDocs``), a plan bundles the
pool sorted by evidence id, so a plan depends on membership, not on insertion order.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction

from evidence.bundling import STRATEGIES, VIEWS, EvidenceRef, build_bundles, plan_signature
from evidence.models import BundlePlan, BundlePlanItem, Evidence, Pool, PoolEvidence
from evidence.services.errors import EvidenceConflict, EvidenceInvalid, EvidenceNotFound
from evidence.services.windows import TAG_RE

PER_SAMPLE_STRATEGIES = frozenset({"window_round_robin"})


@dataclass(frozen=True, slots=True)
class BundlePlanResult:
    plan: BundlePlan
    created: bool

    def to_dict(self) -> dict[str, object]:
        plan = self.plan
        return {
            "created": self.created,
            "bundle_plan_id": plan.pk,
            "tag": plan.tag,
            "pool": plan.pool.tag,
            "strategy": plan.strategy,
            "strategy_version": plan.strategy_version,
            "source_view": plan.source_view or None,
            "bundle_size": plan.bundle_size,
            "seed": plan.seed,
            "evidence_count": plan.evidence_count,
            "bundle_count": plan.bundle_count,
            "per_sample": plan.strategy in PER_SAMPLE_STRATEGIES,
            "plan_signature": plan.plan_signature,
        }


def _refs(pool: Pool) -> list[EvidenceRef]:
    ids = sorted(PoolEvidence.objects.filter(pool=pool).values_list("evidence_id", flat=True))
    rows = {
        row["id"]: row
        for row in Evidence.objects.filter(pk__in=ids).values("id", "window_id", *VIEWS)
    }
    return [
        EvidenceRef(
            evidence_id=eid,
            window_id=int(rows[eid]["window_id"]),
            texts={view: str(rows[eid][view]) for view in VIEWS if rows[eid][view] is not None},
        )
        for eid in ids
    ]


def bundle_plan_create(
    *,
    tag: str,
    pool_tag: str,
    strategy: str,
    version: str = "v1",
    source_view: str | None = None,
    bundle_size: int,
    seed: int | None = None,
) -> BundlePlanResult:
    """Create (or reuse) the bundle plan for this configuration; see the module docstring."""
    if not TAG_RE.match(tag or ""):
        raise EvidenceInvalid(
            f"bundle plan tag {tag!r} is not a slug",
            fix="use lowercase letters, digits, '-' and '_' (max 100 characters)",
        )
    if strategy not in STRATEGIES:
        raise EvidenceInvalid(
            f"unknown bundle strategy {strategy!r}", fix=f"use one of {', '.join(STRATEGIES)}"
        )
    if source_view is not None and source_view not in VIEWS:
        raise EvidenceInvalid(
            f"unknown source view {source_view!r}", fix=f"use one of {', '.join(VIEWS)}"
        )
    if bundle_size < 1:
        raise EvidenceInvalid(f"bundle size {bundle_size} is below 1", fix="use 1 or more")
    pool = Pool.objects.filter(tag=pool_tag).first()
    if pool is None:
        raise EvidenceNotFound(
            f"pool {pool_tag!r} does not exist",
            fix="freeze one first (`manage.py windows pool <tag> --windows a,b`)",
        )
    refs = _refs(pool)
    if not refs:
        raise EvidenceInvalid(f"pool {pool_tag!r} is empty", fix="use a pool with evidence")
    signature = plan_signature(
        strategy, version, source_view, bundle_size, seed, [r.evidence_id for r in refs]
    )
    existing = BundlePlan.objects.select_related("pool").filter(plan_signature=signature).first()
    if existing is not None:
        return BundlePlanResult(plan=existing, created=False)
    taken = BundlePlan.objects.filter(tag=tag).first()
    if taken is not None:
        raise EvidenceConflict(
            f"bundle plan tag {tag!r} already exists with a different configuration "
            f"(pool {taken.pool_id}, {taken.strategy}, size {taken.bundle_size}, "
            f"seed {taken.seed})",
            fix="choose another tag, or pass exactly the existing plan's configuration",
        )
    per_sample = strategy in PER_SAMPLE_STRATEGIES
    try:
        bundles = (
            []
            if per_sample
            else build_bundles(
                strategy, refs, bundle_size=bundle_size, seed=seed or 0, view=source_view
            )
        )
    except ValueError as exc:
        raise EvidenceInvalid(str(exc), fix="check the strategy, size and view") from exc
    try:
        with transaction.atomic():
            plan = BundlePlan.objects.create(
                tag=tag,
                pool=pool,
                strategy=strategy,
                strategy_version=version,
                source_view=source_view or "",
                bundle_size=bundle_size,
                seed=seed,
                plan_signature=signature,
                evidence_count=len(refs),
                bundle_count=len(bundles),
            )
            BundlePlanItem.objects.bulk_create(
                [
                    BundlePlanItem(
                        plan=plan,
                        bundle_index=bundle.bundle_index,
                        evidence_id=item.evidence_id,
                        window_id=item.window_id,
                        position=position,
                        cluster_id=bundle.cluster_id,
                        bundle_signature=bundle.signature,
                    )
                    for bundle in bundles
                    for position, item in enumerate(bundle.items)
                ],
                batch_size=2000,
            )
    except IntegrityError as exc:
        # A concurrent create of the same plan (signature) or tag won the race.
        again = BundlePlan.objects.select_related("pool").filter(plan_signature=signature).first()
        if again is not None:
            return BundlePlanResult(plan=again, created=False)
        raise EvidenceConflict(
            f"bundle plan tag {tag!r} was just taken", fix="choose another tag"
        ) from exc
    return BundlePlanResult(plan=plan, created=True)
