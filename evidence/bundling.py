"""Evidence bundling: how a frozen pool becomes the score targets of a run.

Why this module exists: bundle construction is one of the experimental axes the judge-gym
paper measures (a judge scores a *bundle* of evidence as one unit, and which evidence shares a
bundle shifts its verdicts). The bundles must therefore be exactly reproducible from the stored
configuration (strategy, bundle size, seed, source view) and the pool, and faithful to the
original TypeScript engine (``bundle_plan_logic.ts`` / ``bundle_plan_materializer.ts`` under
``packages/engine/convex/domain/`` on ``main``, plus ``assertBundleFitsBudget`` in run creation),
so that bundle families from either engine mean the same thing.

Everything here is pure: dataclasses in, dataclasses out, no Django models and no I/O. Callers
(plan materialisation, run creation) persist the result.

Strategies (all shared by every sample except ``window_round_robin``, which is per sample):

``window_round_robin``
    Seeded shuffle of the pool, grouped by window, windows ordered by a second shuffle seeded
    with ``seed ^ 0x9e3779b9``, interleaved one item per window per round, then chunked.
``random_bundle``
    Seeded shuffle of the pool, then chunked.
``semantic_cluster`` / ``semantic_cluster_projected``
    TF-IDF over one view of the evidence, farthest-point centres, balanced capacities, greedy
    cosine assignment. ``_projected`` always clusters on ``l2_neutralized``.

Matching the original, point by point (each function's docstring repeats the relevant ones):

* The PRNG is ``judge_project.prng`` (mulberry32 + Fisher-Yates from the end), identical to the
  original ``shuffleWithSeed`` in ``utils/randomize.ts``. Seeds are reduced to 32 bits exactly
  as JavaScript's ``| 0`` does, so any Python int is accepted.
* ``seed ^ 0x9e3779b9`` in JavaScript converts both operands to int32 and yields a *signed*
  int32; we compute ``to_int32(seed ^ 0x9E3779B9)``. mulberry32 only sees the 32-bit pattern, so
  the sign cannot change a shuffle, but the derived seed is the same number JavaScript holds.
* Chunking: a bundle size at or above the sequence length yields one bundle, otherwise slices of
  ``bundle_size`` with a shorter last bundle (``chunkSequence``).
* TF-IDF weights and norms are computed with the original's formula and summation order;
  cosine similarities use the original's formula but accumulate dot products in the centre's
  token order (see ``_Similarity``), so they can differ from V8's in the last ulp, as can
  ``math.log`` versus ``Math.log``. Only exact ties between mathematically equal values can be
  affected.

Deliberate deviations (all documented where they occur):

* Evidence ids are integers here (Convex ids were opaque strings compared with
  ``localeCompare``). ``bundle_signature`` and the in-cluster tie-break therefore sort ids
  numerically; lexicographic order of decimal strings ("10" < "9") would carry no meaning.
* ``bundle_size < 1`` raises instead of being clamped with ``Math.max(1, ...)``: a zero or
  negative size is a configuration bug, and silently bundling one-by-one hid it.
* The token guard resolves each item's text with the same lower-view fallback the prompt
  renderer uses, instead of the original's ``view ?? l0_raw``, so it measures what is sent.
* The guard error names the offending bundle and the fix; the original only said the cap was
  exceeded.
* :func:`build_bundles` rejects an empty pool and duplicate evidence ids (the original produced
  no targets, or duplicate members, silently).

Pool order matters: the shuffles consume the pool in the order given. The original run creation
passes pool links in insertion order; its plan materialiser (``getPoolEvidenceDocs``) sorts the
pool by evidence id first. Callers should do the same to reproduce either behaviour, and must
pass the same order to :func:`plan_signature` as to :func:`build_bundles`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from judge_project.prng import seeded_shuffle, to_int32

__all__ = [
    "DEFAULT_TOKEN_LIMIT",
    "STRATEGIES",
    "VIEWS",
    "WINDOW_ORDER_SALT",
    "Bundle",
    "BundleTooLargeError",
    "EvidenceRef",
    "build_bundles",
    "bundle_signature",
    "check_token_guard",
    "estimate_bundle_tokens",
    "estimate_tokens",
    "plan_signature",
    "random_bundle",
    "semantic_cluster",
    "semantic_cluster_projected",
    "text_for_view",
    "window_order_seed",
    "window_round_robin",
]

#: Evidence views from least to most processed; a missing view falls back towards ``l0_raw``.
VIEWS: Final[tuple[str, ...]] = ("l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted")

#: Bundle strategies, as stored in ``scoring_config.bundle_strategy``.
STRATEGIES: Final[tuple[str, ...]] = (
    "window_round_robin",
    "random_bundle",
    "semantic_cluster",
    "semantic_cluster_projected",
)

#: Golden-ratio constant the original XORs into the seed to order windows independently of the
#: evidence shuffle.
WINDOW_ORDER_SALT: Final = 0x9E3779B9

#: The original's ``maxScoreTargetEstimatedInputTokens`` engine setting.
DEFAULT_TOKEN_LIMIT: Final = 20_000

_PROJECTED_VIEW: Final = "l2_neutralized"
# ``text.toLowerCase().split(/[^a-z0-9]+/g).filter(t => t.length >= 3)``: maximal runs of
# [a-z0-9] of length >= 3 are exactly what that split-and-filter keeps.
_TOKEN_RE: Final = re.compile(r"[a-z0-9]{3,}")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    """One pool member as the bundler sees it.

    ``texts`` maps a view name (see :data:`VIEWS`) to that view's content; views not yet
    produced are simply absent (see :func:`text_for_view` for the fallback).
    """

    evidence_id: int
    window_id: int
    texts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bundle:
    """One score target: evidence in prompt (position) order.

    ``cluster_id`` is set only by the semantic strategies. It is 1-based, mirroring the
    original's ``cluster_<bundle_index + 1>`` label (render it as ``f"cluster_{cluster_id}"``
    for export parity).
    """

    bundle_index: int
    items: list[EvidenceRef]
    cluster_id: int | None = None

    @property
    def evidence_ids(self) -> list[int]:
        """Evidence ids in position order."""
        return [item.evidence_id for item in self.items]

    @property
    def signature(self) -> str:
        """``bundle_signature``: the bundle's membership, independent of position order."""
        return bundle_signature(self.evidence_ids)


class BundleTooLargeError(ValueError):
    """A bundle's estimated prompt size exceeds the per-target token cap."""

    def __init__(self, bundle_index: int, estimated_tokens: int, limit: int, view: str) -> None:
        self.bundle_index = bundle_index
        self.estimated_tokens = estimated_tokens
        self.limit = limit
        self.view = view
        super().__init__(
            f"bundle {bundle_index} is estimated at {estimated_tokens} input tokens "
            f"(view {view!r}, ~4 characters per token), above the per-target cap of {limit}; "
            "use a smaller evidence_bundle_size or a more abstracted evidence view "
            "(e.g. l2_neutralized or l3_abstracted)"
        )


# --------------------------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------------------------


def bundle_signature(evidence_ids: Iterable[int]) -> str:
    """Sorted evidence ids joined with ``"|"``, e.g. ``"3|17|42"``.

    Matches the original's ``buildBundleSignature`` (sort, then ``join("|")``) except that our
    ids are integers and sort numerically (the original sorted opaque Convex id strings with
    ``localeCompare``). Exported per response so clustering regimes can be compared across
    experiments: two bundles with the same members share a signature whatever their order.
    """
    return "|".join(str(evidence_id) for evidence_id in sorted(evidence_ids))


def text_for_view(evidence: EvidenceRef, view: str | None) -> str:
    """The evidence text for ``view``, falling back to lower views when it is missing.

    Mirrors the original's ``getEvidenceContentForView``: ``l3 ?? l2 ?? l1 ?? l0``, ``l2 ?? l1 ??
    l0``, ``l1 ?? l0``, and ``l0_raw`` (or ``None``) reads ``l0_raw`` only. Like ``??``, only an
    *absent* view falls through; an empty string is a real (empty) text. With nothing at all,
    the text is ``""`` (the original's ``l0_raw_content`` was mandatory).
    """
    start = _VIEW_RANK[_check_view(view)] if view is not None else 0
    for level in range(start, -1, -1):
        text = evidence.texts.get(VIEWS[level])
        if text is not None:
            return text
    return ""


def estimate_tokens(text: str) -> int:
    """``Math.ceil(text.length / 4)``, the original's cheap input-size estimate.

    JavaScript's ``length`` counts UTF-16 code units, so characters outside the Basic
    Multilingual Plane (emoji, some CJK) count twice; we count the same way.
    """
    utf16_units = len(text.encode("utf-16-le")) // 2
    return -(-utf16_units // 4)


def estimate_bundle_tokens(bundle: Bundle, view: str | None) -> int:
    """Sum of per-item :func:`estimate_tokens` (the original rounds up per item, then sums)."""
    return sum(estimate_tokens(text_for_view(item, view)) for item in bundle.items)


def check_token_guard(
    bundles: Sequence[Bundle], view: str | None, limit: int = DEFAULT_TOKEN_LIMIT
) -> None:
    """Refuse to create score targets whose evidence alone exceeds ``limit`` estimated tokens.

    Why: a bundle of long raw articles silently blows the model's context or the batch token
    budget only after submission; the original failed run creation instead
    (``assertBundleFitsBudget``: estimated > cap throws). We keep that contract (strictly
    greater than the cap fails) and raise :class:`BundleTooLargeError` for the first offending
    bundle, naming its index, its estimate and the fix. Deviation: texts are resolved with the
    prompt renderer's lower-view fallback (:func:`text_for_view`), not ``view ?? l0_raw``.
    """
    for bundle in bundles:
        estimated = estimate_bundle_tokens(bundle, view)
        if estimated > limit:
            raise BundleTooLargeError(bundle.bundle_index, estimated, limit, view or VIEWS[0])


_VIEW_RANK: Final[dict[str, int]] = {view: rank for rank, view in enumerate(VIEWS)}


def _check_view(view: str) -> str:
    if view not in _VIEW_RANK:
        raise ValueError(f"unknown evidence view {view!r}; expected one of {', '.join(VIEWS)}")
    return view


def _check_bundle_size(bundle_size: int) -> None:
    # Deviation: the original clamps with Math.max(1, bundle_size); a size below 1 is a bug.
    if bundle_size < 1:
        raise ValueError(f"bundle_size must be >= 1, got {bundle_size}")


def _chunk(sequence: list[EvidenceRef], bundle_size: int) -> list[Bundle]:
    """``chunkSequence``: one bundle if ``bundle_size`` covers everything, else fixed slices."""
    if not sequence:
        return []
    if bundle_size >= len(sequence):
        return [Bundle(0, list(sequence))]
    return [
        Bundle(index, sequence[start : start + bundle_size])
        for index, start in enumerate(range(0, len(sequence), bundle_size))
    ]


# --------------------------------------------------------------------------------------------
# window_round_robin and random_bundle
# --------------------------------------------------------------------------------------------


def window_order_seed(seed: int) -> int:
    """The seed of the window-order shuffle: JavaScript's ``seed ^ 0x9e3779b9`` (signed int32)."""
    return to_int32(seed ^ WINDOW_ORDER_SALT)


def window_round_robin(pool: Sequence[EvidenceRef], *, bundle_size: int, seed: int) -> list[Bundle]:
    """Per-sample bundles that spread each bundle across windows.

    Why: with one seed per sample, every sample sees a different but window-balanced grouping,
    so no bundle is dominated by one news window. Algorithm (``buildWindowRoundRobinSequence``):

    1. ``seeded_shuffle(pool, seed)``.
    2. Group by ``window_id``, keeping shuffled order inside each window; windows are keyed in
       order of first appearance in the shuffled list (the original's ``Map`` insertion order).
    3. Shuffle that window list with :func:`window_order_seed` (``seed ^ 0x9e3779b9``).
    4. Interleave: each round takes the next item of every window that still has one, in the
       shuffled window order, until all windows are exhausted.
    5. Chunk by ``bundle_size``; a size at or above the pool gives a single bundle.
    """
    _check_bundle_size(bundle_size)
    by_window: dict[int, list[EvidenceRef]] = {}
    for evidence in seeded_shuffle(pool, seed):
        by_window.setdefault(evidence.window_id, []).append(evidence)
    window_order = seeded_shuffle(list(by_window), window_order_seed(seed))
    queues = [by_window[window_id] for window_id in window_order]
    longest = max((len(queue) for queue in queues), default=0)
    sequence = [queue[rnd] for rnd in range(longest) for queue in queues if rnd < len(queue)]
    return _chunk(sequence, bundle_size)


def random_bundle(pool: Sequence[EvidenceRef], *, bundle_size: int, seed: int) -> list[Bundle]:
    """``seeded_shuffle(pool, seed)`` chunked by ``bundle_size``; one plan shared by all samples.

    Why: the control for bundle composition, i.e. bundles with no window or topic structure.
    Matches the original's ``random_bundle`` branch (``clustering_seed ?? 0`` is the caller's
    job: pass ``seed=0`` when the experiment has none).
    """
    _check_bundle_size(bundle_size)
    return _chunk(seeded_shuffle(pool, seed), bundle_size)


# --------------------------------------------------------------------------------------------
# semantic_cluster
# --------------------------------------------------------------------------------------------


def _tfidf_vectors(texts: Sequence[str]) -> tuple[list[dict[int, float]], list[float]]:
    """``buildTfIdfVectors``: tf = raw count, idf = ``ln((1 + N) / (1 + df)) + 1``.

    Tokens: lowercase, maximal ``[a-z0-9]`` runs of at least 3 characters, no stop-word list
    (every unaccented letter/digit run counts; anything else, accented letters included,
    separates tokens). Tokens are interned to ints for speed only. Returns the sparse vectors
    (token -> weight, in first-appearance order like the original's ``Map``) and their
    Euclidean norms, each summed in that order as the original does.
    """
    vocabulary: dict[str, int] = {}
    token_lists = [
        [vocabulary.setdefault(token, len(vocabulary)) for token in _TOKEN_RE.findall(t.lower())]
        for t in texts
    ]
    document_frequency: dict[int, int] = {}
    for tokens in token_lists:
        for token in set(tokens):
            document_frequency[token] = document_frequency.get(token, 0) + 1
    total_docs = max(1, len(texts))
    idf = {
        token: math.log((1 + total_docs) / (1 + df)) + 1 for token, df in document_frequency.items()
    }
    vectors: list[dict[int, float]] = []
    norms: list[float] = []
    for tokens in token_lists:
        counts: dict[int, int] = {}
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
        weights = {token: count * idf[token] for token, count in counts.items()}
        squares = 0.0
        for weight in weights.values():
            squares += weight * weight
        vectors.append(weights)
        norms.append(math.sqrt(squares))
    return vectors, norms


class _Similarity:
    """Cosine similarity of every document to one centre at a time, via an inverted index.

    Why an inverted index: the algorithm needs the similarity of every document to every
    centre (n * k values). Walking each centre's tokens through their posting lists touches
    only documents that share a token and keeps the inner loop trivial; it measured 4-5x
    faster than a per-pair sparse dot product. Cost: O(sum over centres of the document
    frequencies of their tokens), roughly n * k * (shared tokens per pair).

    Same formula as the original's ``cosineSimilarity``: ``dot / (|doc| * |centre|)``, 0 when
    either vector is empty. One documented difference: the dot product is accumulated in the
    *centre's* token order, while the original iterated whichever vector was smaller. Where
    the centre is the smaller vector the values are bit-identical; otherwise they can differ
    in the last ulp, which only matters for exact ties between mathematically equal
    similarities of differently ordered documents. (Bit parity of whole cluster plans across
    engines was never attainable anyway: the original's plan pool order and in-bundle ties
    depend on Convex id strings.) The order here is fixed, so results are deterministic.
    """

    def __init__(self, vectors: list[dict[int, float]], norms: list[float]) -> None:
        self._vectors = vectors
        self._norms = norms
        self._postings: dict[int, list[tuple[int, float]]] = {}
        for doc, weights in enumerate(vectors):
            for token, weight in weights.items():
                self._postings.setdefault(token, []).append((doc, weight))

    def row(self, centre: int) -> list[float]:
        """``row[d]`` = cosine(document d, centre)."""
        norms = self._norms
        centre_norm = norms[centre]
        if centre_norm == 0:
            return [0.0] * len(norms)
        dots = [0.0] * len(norms)
        postings = self._postings
        for token, centre_weight in self._vectors[centre].items():
            for doc, weight in postings[token]:
                dots[doc] += weight * centre_weight
        return [
            dot / (norm * centre_norm) if norm else 0.0
            for dot, norm in zip(dots, norms, strict=True)
        ]


def _balanced_capacities(count: int, bundle_size: int) -> list[int]:
    """``getBundleCapacities``: ``ceil(count / size)`` bundles whose sizes differ by at most 1.

    The first ``count % bundles`` bundles get one extra item (e.g. 10 items, size 4 ->
    3 bundles -> capacities [4, 3, 3]), so clusters are balanced instead of [4, 4, 2].
    """
    bundle_count = -(-count // bundle_size)
    base, remainder = divmod(count, bundle_count)
    return [base + 1 if index < remainder else base for index in range(bundle_count)]


def semantic_cluster(
    pool: Sequence[EvidenceRef], *, bundle_size: int, seed: int, view: str | None = "l0_raw"
) -> list[Bundle]:
    """Topic-coherent, size-balanced bundles from TF-IDF similarity; one plan for all samples.

    Why: tests whether judges behave differently when a bundle's evidence is about the same
    thing. Matches ``buildSemanticClusterBundles``:

    * Degenerate sizes first: ``bundle_size == 1`` gives singletons and ``bundle_size >= pool``
      one bundle, both in *pool* order (no shuffle, no vectors), still labelled as clusters.
    * Text: :func:`text_for_view` of ``view`` (``None`` reads ``l0_raw``), TF-IDF as in
      :func:`_tfidf_vectors`.
    * ``order = seeded_shuffle(range(n), seed)``; a document's rank is its position there.
    * Capacities: :func:`_balanced_capacities`; ``k`` = number of bundles.
    * Centres, farthest-point: the first centre is ``order[0]``; each next centre is the
      non-centre whose distance (``1 - cosine``) to its nearest centre is largest, ties to the
      lowest rank. (The original recomputes every minimum each round; we keep a running
      minimum, which is the same value because ``min`` is exact. That makes it O(n*k) instead
      of O(n*k^2) and is what lets a 2,000-item pool, bundle size 5, finish in one to two
      seconds.)
    * Centre ``b`` seeds bundle ``b``. The other documents are visited in descending order of
      their best similarity to any centre (ties: lowest rank); each goes to the most similar
      centre that still has capacity (ties: lowest bundle index).
    * Inside a bundle, items are ordered by similarity to its centre, descending, ties by
      evidence id ascending (numeric: our ids are ints; the original used ``localeCompare`` on
      id strings). The centre is usually, but not necessarily, first.
    * ``cluster_id`` is ``bundle_index + 1`` (the original's ``cluster_<n>``).
    """
    _check_bundle_size(bundle_size)
    if view is not None:
        _check_view(view)
    n = len(pool)
    if n == 0:
        return []
    if bundle_size == 1:
        return [Bundle(index, [evidence], index + 1) for index, evidence in enumerate(pool)]
    if bundle_size >= n:
        return [Bundle(0, list(pool), 1)]

    cosine = _Similarity(*_tfidf_vectors([text_for_view(evidence, view) for evidence in pool]))
    order = seeded_shuffle(range(n), seed)
    rank = [0] * n
    for position, index in enumerate(order):
        rank[index] = position
    capacities = _balanced_capacities(n, bundle_size)
    bundle_count = len(capacities)  # >= 2 here, since 1 < bundle_size < n

    centres = [order[0]]
    rows = [cosine.row(order[0])]  # rows[b][d] = cosine(doc d, centre b)
    nearest = [1 - value for value in rows[0]]  # distance to the nearest centre
    candidates = order[1:]  # non-centres, in rank order
    while len(centres) < bundle_count:
        # max() keeps the first maximum in iteration (= rank) order: the original's tie rule.
        best = max(candidates, key=nearest.__getitem__)
        candidates.remove(best)
        centres.append(best)
        rows.append(cosine.row(best))
        if len(centres) < bundle_count:
            nearest = list(map(min, nearest, [1 - value for value in rows[-1]]))

    columns = list(zip(*rows, strict=True))  # columns[d][b] = rows[b][d]
    remaining = sorted(candidates, key=lambda doc: (-max(columns[doc]), rank[doc]))

    members = [[centre] for centre in centres]
    left = [capacity - 1 for capacity in capacities]
    open_bundles = [index for index in range(bundle_count) if left[index] > 0]
    for doc in remaining:
        # First maximum over ascending bundle indices: highest similarity, ties to lowest index.
        chosen = max(open_bundles, key=columns[doc].__getitem__)
        members[chosen].append(doc)
        left[chosen] -= 1
        if left[chosen] == 0:
            open_bundles.remove(chosen)

    bundles: list[Bundle] = []
    for index, docs in enumerate(members):
        row = rows[index]
        ordered = sorted(docs, key=lambda doc: (-row[doc], pool[doc].evidence_id))
        bundles.append(Bundle(index, [pool[doc] for doc in ordered], index + 1))
    return bundles


def semantic_cluster_projected(
    pool: Sequence[EvidenceRef], *, bundle_size: int, seed: int
) -> list[Bundle]:
    """:func:`semantic_cluster` on ``l2_neutralized`` whatever the scoring view.

    Why: clusters formed on neutralised text group evidence by topic rather than by outlet
    style; the original hard-codes ``l2_neutralized`` for this strategy.
    """
    return semantic_cluster(pool, bundle_size=bundle_size, seed=seed, view=_PROJECTED_VIEW)


# --------------------------------------------------------------------------------------------
# Dispatch and plan identity
# --------------------------------------------------------------------------------------------


def build_bundles(
    strategy: str,
    pool: Sequence[EvidenceRef],
    *,
    bundle_size: int,
    seed: int,
    view: str | None = None,
) -> list[Bundle]:
    """Bundle ``pool`` with ``strategy``; the single entry point for run and plan creation.

    ``seed`` is the sample seed for ``window_round_robin`` and the experiment's clustering seed
    (the original's ``clustering_seed ?? 0``) otherwise. ``view`` is the experiment's evidence
    view; only ``semantic_cluster`` reads it (``None`` means ``l0_raw``), ``_projected`` always
    uses ``l2_neutralized``, and the shuffling strategies ignore it.

    Raises ``ValueError`` for an unknown strategy or view, ``bundle_size < 1``, an empty pool
    (a run with nothing to score is a configuration error; the original silently produced no
    targets) or duplicate evidence ids (a bundle signature must identify members uniquely).
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown bundle strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}"
        )
    _check_bundle_size(bundle_size)
    if view is not None:
        _check_view(view)
    if not pool:
        raise ValueError("cannot bundle an empty pool")
    ids = [evidence.evidence_id for evidence in pool]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"pool has duplicate evidence ids: {duplicates}")

    if strategy == "window_round_robin":
        return window_round_robin(pool, bundle_size=bundle_size, seed=seed)
    if strategy == "random_bundle":
        return random_bundle(pool, bundle_size=bundle_size, seed=seed)
    if strategy == "semantic_cluster":
        return semantic_cluster(pool, bundle_size=bundle_size, seed=seed, view=view)
    return semantic_cluster_projected(pool, bundle_size=bundle_size, seed=seed)


def plan_signature(
    strategy: str,
    version: str,
    source_view: str | None,
    bundle_size: int,
    seed: int | None,
    pool_evidence_ids: Sequence[int],
) -> str:
    """SHA-256 (hex) of the canonical JSON of everything that determines a bundle plan.

    Why: the original reused a plan when pool, strategy, version, size, seed and source view
    matched (``findMatchingBundlePlan``), relying on the pool id to pin membership. We hash the
    membership itself, so an identical plan is recognised across pools too.

    Normalisation, as the original's ``deriveBundlePlanArgsForExperiment`` stores plans:
    ``source_view`` is kept only for ``semantic_cluster`` (forced to ``l2_neutralized`` for
    ``_projected``, dropped for the shuffling strategies, which never read it); ``seed`` is
    dropped for ``window_round_robin`` (its seed is per sample, so the plan is only a recipe)
    and ``None`` means 0 otherwise (the original bundles with ``seed ?? 0``).
    ``pool_evidence_ids`` keep their order: the shuffles consume the pool in order, so the
    same members in another order are a different plan.

    Canonical JSON: sorted keys, no whitespace, UTF-8.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown bundle strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}"
        )
    _check_bundle_size(bundle_size)
    if strategy == "semantic_cluster":
        view: str | None = _check_view(source_view) if source_view is not None else None
    elif strategy == "semantic_cluster_projected":
        view = _PROJECTED_VIEW
    else:
        view = None
    payload = {
        "bundle_size": bundle_size,
        "pool_evidence_ids": [int(evidence_id) for evidence_id in pool_evidence_ids],
        "seed": None if strategy == "window_round_robin" else int(seed or 0),
        "source_view": view,
        "strategy": strategy,
        "strategy_version": version,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
