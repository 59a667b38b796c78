"""Bundle plans (reuse by signature) and pools frozen from windows."""

from __future__ import annotations

import pytest

from evidence.models import BundlePlan, BundlePlanItem, PoolEvidence
from evidence.services.errors import EvidenceConflict, EvidenceInvalid, EvidenceNotFound
from evidence.services.plans import bundle_plan_create
from evidence.services.pools import PoolError, demo_pool_load, windows_pool_create
from evidence.services.windows import window_collect
from tests.evidence.conftest import drive, make_window


@pytest.mark.django_db
def test_identical_plan_is_reused_not_recreated() -> None:
    demo_pool_load(tag="p", windows=2, per_window=4)
    first = bundle_plan_create(
        tag="bp", pool_tag="p", strategy="random_bundle", bundle_size=3, seed=7
    )
    assert first.created is True
    plan = first.plan
    assert (plan.evidence_count, plan.bundle_count) == (8, 3)
    items = BundlePlanItem.objects.filter(plan=plan)
    assert items.count() == 8
    assert sorted(items.values_list("evidence_id", flat=True)) == sorted(
        PoolEvidence.objects.filter(pool=plan.pool).values_list("evidence_id", flat=True)
    )
    again = bundle_plan_create(
        tag="bp", pool_tag="p", strategy="random_bundle", bundle_size=3, seed=7
    )
    assert again.created is False
    assert again.plan.pk == plan.pk
    # Same configuration under another tag: still the one plan.
    other = bundle_plan_create(
        tag="bp2", pool_tag="p", strategy="random_bundle", bundle_size=3, seed=7
    )
    assert other.created is False
    assert other.plan.pk == plan.pk
    assert BundlePlan.objects.count() == 1
    assert BundlePlanItem.objects.count() == 8
    with pytest.raises(EvidenceConflict, match="different configuration"):
        bundle_plan_create(tag="bp", pool_tag="p", strategy="random_bundle", bundle_size=3, seed=8)
    assert again.to_dict()["created"] is False


@pytest.mark.django_db
def test_plan_strategies_and_errors() -> None:
    demo_pool_load(tag="p", windows=2, per_window=3)
    rr = bundle_plan_create(tag="rr", pool_tag="p", strategy="window_round_robin", bundle_size=2)
    assert rr.created
    assert rr.plan.bundle_count == 0
    assert not BundlePlanItem.objects.filter(plan=rr.plan).exists()  # built per sample
    assert rr.to_dict()["per_sample"] is True
    sc = bundle_plan_create(
        tag="sc",
        pool_tag="p",
        strategy="semantic_cluster",
        source_view="l0_raw",
        bundle_size=2,
        seed=7,
    )
    assert sc.plan.bundle_count == 3
    assert set(
        BundlePlanItem.objects.filter(plan=sc.plan).values_list("cluster_id", flat=True)
    ) == {1, 2, 3}
    with pytest.raises(EvidenceNotFound):
        bundle_plan_create(tag="x", pool_tag="nope", strategy="random_bundle", bundle_size=2)
    with pytest.raises(EvidenceInvalid, match="unknown bundle strategy"):
        bundle_plan_create(tag="x", pool_tag="p", strategy="clusters", bundle_size=2)
    with pytest.raises(EvidenceInvalid, match="below 1"):
        bundle_plan_create(tag="x", pool_tag="p", strategy="random_bundle", bundle_size=0)


@pytest.mark.django_db(transaction=True)
def test_pool_from_windows(simulator, eager_celery) -> None:
    make_window("w-a", evidence_limit=3)
    make_window("w-b", country="Poland", evidence_limit=2)
    make_window("w-raw", country="Italy", evidence_limit=2, target_stage="l0_raw")
    for tag in ("w-a", "w-b", "w-raw"):
        drive(window_collect(tag=tag).pk)
    pool = windows_pool_create(pool_tag="pool-ab", window_tags=["w-b", "w-a"])
    members = list(
        PoolEvidence.objects.filter(pool=pool)
        .order_by("position")
        .values_list("evidence__window__tag", "evidence__l3_abstracted")
    )
    assert [tag for tag, _ in members] == ["w-b", "w-b", "w-a", "w-a", "w-a"]
    assert all(text for _, text in members)
    with pytest.raises(PoolError, match="pool tag 'pool-ab' already exists"):
        windows_pool_create(pool_tag="pool-ab", window_tags=["w-a"])
    with pytest.raises(PoolError, match="no evidence of windows w-raw reached l3_abstracted"):
        windows_pool_create(pool_tag="pool-raw", window_tags=["w-raw"])
    assert (
        windows_pool_create(
            pool_tag="pool-raw", window_tags=["w-raw"], stage="l0_raw"
        ).evidence_count
        == 2
    )
    make_window("w-new", country="India")
    with pytest.raises(PoolError, match="has no completed window run"):
        windows_pool_create(pool_tag="pool-new", window_tags=["w-new"])
    with pytest.raises(PoolError, match="does not exist"):
        windows_pool_create(pool_tag="pool-x", window_tags=["ghost"])
