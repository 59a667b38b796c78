"""semantic_cluster: hand-derived vectors, a literal restatement of the algorithm, invariants.

Hand vectors use texts whose TF-IDF geometry is obvious: two identical texts have cosine 1
(their vectors are computed identically) and texts without a shared token have cosine 0, so
every decision of the algorithm can be followed on paper.
"""

from __future__ import annotations

import math
import random
import re

import pytest

from evidence.bundling import (
    Bundle,
    EvidenceRef,
    _balanced_capacities,
    _tfidf_vectors,
    build_bundles,
    semantic_cluster,
    semantic_cluster_projected,
    text_for_view,
)
from judge_project.prng import seeded_shuffle

from .conftest import zipf_pool


def ids(bundles: list[Bundle]) -> list[list[int]]:
    return [bundle.evidence_ids for bundle in bundles]


def l0_pool(texts: list[str]) -> list[EvidenceRef]:
    return [EvidenceRef(i + 1, 1, {"l0_raw": text}) for i, text in enumerate(texts)]


# --------------------------------------------------------------------------------------------
# Hand-derived vectors
# --------------------------------------------------------------------------------------------


def test_hand_vector_three_topics_seed_7() -> None:
    # Indices 0..5 are evidence ids 1..6.
    pool = l0_pool(
        ["apple pie", "storm rain", "apple pie", "storm rain", "chess rook", "chess rook"]
    )
    # n=6, size 2 -> capacities [2, 2, 2]. order = seeded_shuffle(range(6), 7):
    #   i=5 j=0 -> [5,1,2,3,4,0]; i=4 j=0 -> [4,1,2,3,5,0]; i=3 j=3; i=2 j=2; i=1 j=1
    assert seeded_shuffle(range(6), 7) == [4, 1, 2, 3, 5, 0]
    # Centre 0 = order[0] = idx 4 (chess). Distances: idx 5 -> 0, everything else -> 1.
    # Centre 1 = first in rank order at distance 1: idx 1 (storm); idx 3 drops to 0.
    # Centre 2 = first remaining at distance 1: idx 2 (apple); idx 0 drops to 0.
    # Remaining [3, 5, 0] all have best similarity 1 (same value): rank order 3, 5, 0.
    #   idx 3 -> storm (bundle 1), idx 5 -> chess (bundle 0), idx 0 -> apple (bundle 2).
    # Inside a bundle both similarities are equal, so evidence id ascending.
    bundles = semantic_cluster(pool, bundle_size=2, seed=7)
    assert ids(bundles) == [[5, 6], [2, 4], [1, 3]]
    assert [(b.bundle_index, b.cluster_id) for b in bundles] == [(0, 1), (1, 2), (2, 3)]


def test_hand_vector_capacity_overflow_seed_3() -> None:
    pool = l0_pool(["apple pie", "storm rain", "apple pie", "storm rain", "chess rook"])
    # n=5, size 2 -> ceil(5/2)=3 bundles, 5 = 3*1 + 2 -> capacities [2, 2, 1].
    assert _balanced_capacities(5, 2) == [2, 2, 1]
    # order = seeded_shuffle(range(5), 3):
    #   i=4 j=3 -> [0,1,2,4,3]; i=3 j=0 -> [4,1,2,0,3]; i=2 j=1 -> [4,2,1,0,3]; i=1 j=0
    assert seeded_shuffle(range(5), 3) == [2, 4, 1, 0, 3]
    # Centre 0 = idx 2 (apple); idx 0 now at distance 0.
    # Centre 1 = first at distance 1 in rank order [4, 1, 0, 3] -> idx 4 (chess).
    # Centre 2 = first at distance 1 in [1, 0, 3] -> idx 1 (storm); idx 3 at distance 0.
    # Room left after the centres: [1, 1, 0].
    # Remaining: idx 0 (best 1, rank 3) then idx 3 (best 1, rank 4).
    #   idx 0 -> apple bundle 0 (now full).
    #   idx 3 -> storm bundle 2 is full, so the most similar *open* bundle: 1 (chess, cos 0).
    # Bundle 1 order: the centre (cos 1) before idx 3 (cos 0).
    bundles = semantic_cluster(pool, bundle_size=2, seed=3)
    assert ids(bundles) == [[1, 3], [5, 4], [2]]


def test_degenerate_sizes_keep_pool_order() -> None:
    pool = l0_pool(["b", "a", "c"])
    assert ids(semantic_cluster(pool, bundle_size=1, seed=9)) == [[1], [2], [3]]
    assert [b.cluster_id for b in semantic_cluster(pool, bundle_size=1, seed=9)] == [1, 2, 3]
    for size in (3, 4):
        bundles = semantic_cluster(pool, bundle_size=size, seed=9)
        assert ids(bundles) == [[1, 2, 3]]
        assert bundles[0].cluster_id == 1
    assert semantic_cluster([], bundle_size=2, seed=1) == []


def test_capacities_balanced() -> None:
    assert _balanced_capacities(10, 4) == [4, 3, 3]
    assert _balanced_capacities(12, 4) == [4, 4, 4]
    assert _balanced_capacities(13, 4) == [4, 3, 3, 3]
    assert _balanced_capacities(7, 3) == [3, 2, 2]
    for count in range(1, 60):
        for size in range(1, count + 1):
            caps = _balanced_capacities(count, size)
            assert len(caps) == math.ceil(count / size)
            assert sum(caps) == count
            assert max(caps) - min(caps) <= 1
            assert max(caps) <= size


def test_tfidf_tokens_and_idf() -> None:
    # Lowercased maximal [a-z0-9] runs of >= 3 chars; "an", "x1", accents split tokens.
    vectors, norms = _tfidf_vectors(["The Cat, the cat! an x1 café", "dog cat"])
    # Token ids by first appearance: the=0, cat=1, caf=2, dog=3 ("é" separates "caf").
    n = 2
    idf_cat = math.log((1 + n) / (1 + 2)) + 1  # in both documents -> 1.0
    idf_the = math.log((1 + n) / (1 + 1)) + 1
    assert vectors[0] == {0: 2 * idf_the, 1: 2 * idf_cat, 2: idf_the}
    assert vectors[1] == {3: idf_the, 1: idf_cat}
    assert norms[1] == math.sqrt(idf_the**2 + idf_cat**2)


def test_view_fallback_and_projected_view() -> None:
    ev = EvidenceRef(1, 1, {"l0_raw": "raw", "l1_cleaned": "clean"})
    assert text_for_view(ev, "l3_abstracted") == "clean"
    assert text_for_view(ev, "l2_neutralized") == "clean"
    assert text_for_view(ev, "l1_cleaned") == "clean"
    assert text_for_view(ev, "l0_raw") == "raw"
    assert text_for_view(ev, None) == "raw"
    assert text_for_view(EvidenceRef(1, 1, {"l2_neutralized": ""}), "l3_abstracted") == ""
    assert text_for_view(EvidenceRef(1, 1, {}), "l3_abstracted") == ""
    with pytest.raises(ValueError, match="unknown evidence view"):
        text_for_view(ev, "l9")
    # Raw texts pair (1,2) and (3,4); neutralised texts pair (1,3) and (2,4).
    pool = [
        EvidenceRef(1, 1, {"l0_raw": "alpha beta", "l2_neutralized": "red green"}),
        EvidenceRef(2, 1, {"l0_raw": "alpha beta", "l2_neutralized": "blue cyan"}),
        EvidenceRef(3, 1, {"l0_raw": "gamma delta", "l2_neutralized": "red green"}),
        EvidenceRef(4, 1, {"l0_raw": "gamma delta", "l2_neutralized": "blue cyan"}),
    ]
    by_raw = {frozenset(b.evidence_ids) for b in semantic_cluster(pool, bundle_size=2, seed=1)}
    assert by_raw == {frozenset({1, 2}), frozenset({3, 4})}
    projected = semantic_cluster_projected(pool, bundle_size=2, seed=1)
    assert {frozenset(b.evidence_ids) for b in projected} == {frozenset({1, 3}), frozenset({2, 4})}
    # The projected strategy ignores the scoring view.
    assert ids(
        build_bundles("semantic_cluster_projected", pool, bundle_size=2, seed=1, view="l0_raw")
    ) == ids(projected)
    assert ids(
        build_bundles("semantic_cluster", pool, bundle_size=2, seed=1, view="l2_neutralized")
    ) == ids(projected)


# --------------------------------------------------------------------------------------------
# A literal restatement of the algorithm (full recomputation, pairwise cosine)
# --------------------------------------------------------------------------------------------


def _reference_cluster(texts: list[str], ids_: list[int], size: int, seed: int) -> list[list[int]]:
    """Straight from the definition: recompute minima every round, rank every centre."""
    n = len(texts)
    tokens = [[t for t in re.split(r"[^a-z0-9]+", text.lower()) if len(t) >= 3] for text in texts]
    df: dict[str, int] = {}
    for toks in tokens:
        for t in set(toks):
            df[t] = df.get(t, 0) + 1
    vecs = []
    for toks in tokens:
        tf: dict[str, int] = {}
        for t in toks:
            tf[t] = tf.get(t, 0) + 1
        vecs.append({t: c * (math.log((1 + n) / (1 + df[t])) + 1) for t, c in tf.items()})

    def norm(v: dict[str, float]) -> float:
        total = 0.0
        for x in v.values():
            total += x * x
        return math.sqrt(total)

    def cos(doc: int, centre: int) -> float:
        a, b = vecs[doc], vecs[centre]
        if not a or not b:
            return 0.0
        dot = 0.0
        for t, w in b.items():  # the centre's token order (documented in the module)
            if t in a:
                dot += a[t] * w
        return dot / (norm(a) * norm(b))

    order = seeded_shuffle(list(range(n)), seed)
    count = math.ceil(n / size)
    caps = [n // count + (1 if i < n % count else 0) for i in range(count)]
    centres = [order[0]]
    while len(centres) < count:
        best, best_d = -1, -1.0
        for cand in order:
            if cand in centres:
                continue
            d = min(1 - cos(cand, c) for c in centres)
            if d > best_d:
                best, best_d = cand, d
        centres.append(best)
    room = [c - 1 for c in caps]
    members = [[c] for c in centres]
    rest = [i for i in order if i not in centres]
    rest.sort(key=lambda i: (-max(cos(i, c) for c in centres), order.index(i)))
    for i in rest:
        ranked = sorted(range(count), key=lambda b: (-cos(i, centres[b]), b))
        chosen = next(b for b in ranked if room[b] > 0)
        members[chosen].append(i)
        room[chosen] -= 1
    return [
        [ids_[i] for i in sorted(m, key=lambda i: (-cos(i, centres[b]), ids_[i]))]
        for b, m in enumerate(members)
    ]


@pytest.mark.parametrize("seed", [0, 1, 7, 42, -3, 2**31 - 1])
def test_matches_restatement_on_random_pools(seed: int) -> None:
    rng = random.Random(seed)
    vocab = [f"w{i:02d}x" for i in range(40)] + ["ab", "is", "to"]  # short tokens are dropped
    for _ in range(5):
        n = rng.randrange(5, 40)
        texts = [" ".join(rng.choices(vocab, k=rng.randrange(0, 14))) for _ in range(n)]
        pool = [EvidenceRef(100 + i, i % 3, {"l0_raw": t}) for i, t in enumerate(texts)]
        for size in (2, 3, 5, n - 1):
            got = ids(semantic_cluster(pool, bundle_size=size, seed=seed))
            assert got == _reference_cluster(texts, [e.evidence_id for e in pool], size, seed)


# --------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------

TOPICS = {
    "economy": "inflation prices markets central bank interest rates economy",
    "sport": "football match goal league striker referee stadium",
    "politics": "election ballot voters parliament candidate campaign coalition",
}


def topic_pool() -> tuple[list[EvidenceRef], dict[int, str]]:
    rng = random.Random(5)
    pool: list[EvidenceRef] = []
    topic_of: dict[int, str] = {}
    for topic, words in TOPICS.items():
        vocab = words.split()
        for _ in range(4):
            evidence_id = len(pool) + 1
            text = "The news today: " + " ".join(rng.sample(vocab, 5)) + " reported by the wire."
            pool.append(EvidenceRef(evidence_id, evidence_id % 2, {"l3_abstracted": text}))
            topic_of[evidence_id] = topic
    return pool, topic_of


@pytest.mark.parametrize("seed", range(8))
def test_similar_texts_share_a_bundle(seed: int) -> None:
    pool, topic_of = topic_pool()
    bundles = semantic_cluster(pool, bundle_size=4, seed=seed, view="l3_abstracted")
    assert len(bundles) == 3
    for bundle in bundles:
        assert len({topic_of[i] for i in bundle.evidence_ids}) == 1


def test_every_evidence_once_and_sizes_balanced() -> None:
    pool = zipf_pool(103, tokens=20, topics=6)
    for size in (2, 4, 7, 10, 50, 102):
        bundles = semantic_cluster(pool, bundle_size=size, seed=5)
        flat = [i for b in bundles for i in b.evidence_ids]
        assert sorted(flat) == list(range(1, 104))
        assert [len(b.items) for b in bundles] == _balanced_capacities(103, size)
        assert [b.bundle_index for b in bundles] == list(range(len(bundles)))


def test_deterministic_and_seed_sensitive() -> None:
    pool = zipf_pool(60, tokens=16, topics=4)
    first = ids(semantic_cluster(pool, bundle_size=5, seed=7))
    assert ids(semantic_cluster(pool, bundle_size=5, seed=7)) == first
    assert ids(semantic_cluster(pool, bundle_size=5, seed=8)) != first


def test_two_thousand_items_partition() -> None:
    """A large pool is fully and uniquely partitioned (speed lives in bench/, not here)."""
    pool = zipf_pool(2000)
    bundles = semantic_cluster(pool, bundle_size=5, seed=7)
    assert len(bundles) == 400
    assert sorted(i for b in bundles for i in b.evidence_ids) == list(range(1, 2001))
