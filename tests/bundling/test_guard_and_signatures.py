"""Token guard, bundle/plan signatures and the build_bundles dispatcher."""

from __future__ import annotations

import hashlib

import pytest

from evidence.bundling import (
    DEFAULT_TOKEN_LIMIT,
    STRATEGIES,
    Bundle,
    BundleTooLargeError,
    EvidenceRef,
    build_bundles,
    bundle_signature,
    check_token_guard,
    estimate_bundle_tokens,
    estimate_tokens,
    plan_signature,
)

from .conftest import make_pool


def ref(evidence_id: int, **texts: str) -> EvidenceRef:
    return EvidenceRef(evidence_id, 1, texts)


# --------------------------------------------------------------------------------------------
# Token estimate and guard
# --------------------------------------------------------------------------------------------


def test_estimate_tokens_is_ceil_chars_over_4_in_utf16_units() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("é" * 8) == 2  # BMP: one UTF-16 unit each
    assert estimate_tokens("😀" * 2) == 1  # astral: two units each, like JS .length == 4
    assert estimate_tokens("😀" * 3) == 2


def test_bundle_estimate_rounds_per_item() -> None:
    bundle = Bundle(0, [ref(1, l0_raw="abcde"), ref(2, l0_raw="a")])
    assert estimate_bundle_tokens(bundle, "l0_raw") == 2 + 1  # not ceil(6 / 4) == 2


def test_guard_passes_at_the_limit_and_fails_above_it() -> None:
    at_limit = Bundle(0, [ref(1, l2_neutralized="x" * 4 * DEFAULT_TOKEN_LIMIT)])
    check_token_guard([at_limit], "l2_neutralized")  # equal to the cap is allowed
    small = Bundle(0, [ref(1, l0_raw="x" * 40, l3_abstracted="short")])
    big = Bundle(
        1, [ref(2, l0_raw="x" * 50_000), ref(3, l0_raw="y" * 30_001, l3_abstracted="tiny")]
    )
    with pytest.raises(BundleTooLargeError) as caught:
        check_token_guard([small, big], "l0_raw")
    err = caught.value
    assert isinstance(err, ValueError)
    assert (err.bundle_index, err.estimated_tokens, err.limit) == (1, 20_001, 20_000)
    message = str(err)
    assert "bundle 1" in message
    assert "20001" in message
    assert "20000" in message
    assert "smaller evidence_bundle_size" in message
    assert "more abstracted evidence view" in message
    # The abstracted view fits.
    check_token_guard([small, big], "l3_abstracted")


def test_guard_uses_lower_view_fallback_and_custom_limit() -> None:
    # l3 missing -> l2 (the prompt renderer's fallback), not straight to l0.
    bundle = Bundle(4, [ref(1, l0_raw="x" * 400, l2_neutralized="y" * 40)])
    check_token_guard([bundle], "l3_abstracted", limit=10)
    with pytest.raises(BundleTooLargeError, match="bundle 4 is estimated at 100 input tokens"):
        check_token_guard([bundle], "l0_raw", limit=99)


# --------------------------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------------------------


def test_bundle_signature_sorted_numeric_and_order_independent() -> None:
    items = [ref(10), ref(9), ref(100)]
    assert Bundle(0, items).signature == "9|10|100"
    assert Bundle(3, list(reversed(items))).signature == "9|10|100"
    assert bundle_signature([5]) == "5"
    assert bundle_signature([]) == ""


def test_plan_signature_is_sha256_of_canonical_json() -> None:
    canonical = (
        '{"bundle_size":5,"pool_evidence_ids":[3,1,2],"seed":7,"source_view":null,'
        '"strategy":"random_bundle","strategy_version":"v1"}'
    )
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert plan_signature("random_bundle", "v1", None, 5, 7, [3, 1, 2]) == expected
    assert plan_signature("random_bundle", "v1", None, 5, 7, (3, 1, 2)) == expected


def test_plan_signature_normalisation_and_sensitivity() -> None:
    base = plan_signature("semantic_cluster", "v2", "l3_abstracted", 5, 7, [1, 2, 3])
    assert base == plan_signature("semantic_cluster", "v2", "l3_abstracted", 5, 7, [1, 2, 3])
    for changed in (
        plan_signature("semantic_cluster", "v1", "l3_abstracted", 5, 7, [1, 2, 3]),
        plan_signature("semantic_cluster", "v2", "l2_neutralized", 5, 7, [1, 2, 3]),
        plan_signature("semantic_cluster", "v2", "l3_abstracted", 4, 7, [1, 2, 3]),
        plan_signature("semantic_cluster", "v2", "l3_abstracted", 5, 8, [1, 2, 3]),
        plan_signature("semantic_cluster", "v2", "l3_abstracted", 5, 7, [1, 2, 4]),
        plan_signature("semantic_cluster", "v2", "l3_abstracted", 5, 7, [3, 2, 1]),  # order
        plan_signature("random_bundle", "v2", "l3_abstracted", 5, 7, [1, 2, 3]),
    ):
        assert changed != base
    # Views that cannot change the plan are normalised away.
    assert plan_signature("random_bundle", "v1", "l0_raw", 5, 7, [1]) == plan_signature(
        "random_bundle", "v1", "l3_abstracted", 5, 7, [1]
    )
    assert plan_signature(
        "semantic_cluster_projected", "v1", "l0_raw", 5, 7, [1]
    ) == plan_signature("semantic_cluster_projected", "v1", None, 5, 7, [1])
    # A missing seed bundles like seed 0; round-robin seeds are per sample.
    assert plan_signature("random_bundle", "v1", None, 5, None, [1]) == plan_signature(
        "random_bundle", "v1", None, 5, 0, [1]
    )
    assert plan_signature("window_round_robin", "legacy_v1", None, 5, 1, [1]) == (
        plan_signature("window_round_robin", "legacy_v1", None, 5, None, [1])
    )
    with pytest.raises(ValueError, match="unknown bundle strategy"):
        plan_signature("kmeans", "v1", None, 5, 7, [1])
    with pytest.raises(ValueError, match="unknown evidence view"):
        plan_signature("semantic_cluster", "v1", "l5", 5, 7, [1])


# --------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------

POOL = make_pool({1: 10, 2: 10, 3: 10, 4: 20, 5: 20, 6: 30, 7: 30})


def test_dispatcher_routes_every_strategy() -> None:
    assert [
        b.evidence_ids for b in build_bundles("window_round_robin", POOL, bundle_size=3, seed=7)
    ] == [
        [6, 4, 2],
        [7, 5, 3],
        [1],
    ]
    assert [
        b.evidence_ids for b in build_bundles("random_bundle", POOL, bundle_size=3, seed=42)
    ] == [
        [4, 2, 1],
        [6, 7, 3],
        [5],
    ]
    for strategy in STRATEGIES:
        bundles = build_bundles(strategy, POOL, bundle_size=3, seed=1, view="l1_cleaned")
        assert sorted(i for b in bundles for i in b.evidence_ids) == list(range(1, 8))
        clustered = strategy.startswith("semantic_cluster")
        assert all((b.cluster_id is not None) == clustered for b in bundles)
        single = build_bundles(strategy, POOL, bundle_size=7, seed=1)
        assert len(single) == 1
        assert single[0].signature == "1|2|3|4|5|6|7"


def test_dispatcher_errors() -> None:
    with pytest.raises(ValueError, match="unknown bundle strategy 'kmeans'"):
        build_bundles("kmeans", POOL, bundle_size=3, seed=1)
    with pytest.raises(ValueError, match="bundle_size must be >= 1, got 0"):
        build_bundles("random_bundle", POOL, bundle_size=0, seed=1)
    with pytest.raises(ValueError, match="empty pool"):
        build_bundles("random_bundle", [], bundle_size=3, seed=1)
    with pytest.raises(ValueError, match="unknown evidence view"):
        build_bundles("semantic_cluster", POOL, bundle_size=3, seed=1, view="raw")
    with pytest.raises(ValueError, match=r"duplicate evidence ids: \[2\]"):
        build_bundles("random_bundle", [*POOL, POOL[1]], bundle_size=3, seed=1)
