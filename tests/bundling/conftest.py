"""Pool builders shared by the bundling tests (pure data; no database)."""

from __future__ import annotations

import random

from evidence.bundling import EvidenceRef


def make_pool(windows: dict[int, int], texts: dict[int, str] | None = None) -> list[EvidenceRef]:
    """Evidence ``id -> window`` in the given (insertion) order, with optional l0 texts."""
    texts = texts or {}
    return [
        EvidenceRef(
            evidence_id, window_id, {"l0_raw": texts.get(evidence_id, f"doc {evidence_id}")}
        )
        for evidence_id, window_id in windows.items()
    ]


def zipf_pool(n: int, *, tokens: int = 60, topics: int = 40, seed: int = 1) -> list[EvidenceRef]:
    """A news-like pool: half Zipf-distributed common words, half topic words, 7 windows."""
    rng = random.Random(seed)
    common = [f"word{i}" for i in range(5000)]
    cumulative: list[float] = []
    total = 0.0
    for rank in range(len(common)):
        total += 1 / (rank + 1)
        cumulative.append(total)
    pool = []
    for evidence_id in range(1, n + 1):
        topic = rng.randrange(topics)
        words = rng.choices(common, cum_weights=cumulative, k=tokens // 2)
        words += [f"topic{topic}term{rng.randrange(80)}" for _ in range(tokens // 2)]
        rng.shuffle(words)
        pool.append(EvidenceRef(evidence_id, evidence_id % 7, {"l0_raw": " ".join(words)}))
    return pool
