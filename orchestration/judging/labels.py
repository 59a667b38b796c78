"""Stage identifiers shown to the scoring model, and the per-sample display order.

Why exact: a rubric's ``label_mapping`` (identifier -> canonical stage number) and the display
shuffle are derived from the sample seed, and replaying a run (or comparing it with one from
the TypeScript engine) requires the same identifiers in the same order. Both follow judge-gym
``main`` (utils/randomize.ts, run_prompts.ts) bit for bit, on top of the shared mulberry32 in
``judge_project.prng``:

* Letters ``A, B, C, ...`` -> ``1..N`` without ``anonymize_stages``.
* With ``anonymize_stages``: for stage index ``i`` (0-based) a 6-character token over
  ``0-9a-zA-Z`` (that alphabet order), drawn from ``mulberry32(imul(seed, 2654435761) ^
  imul(i + 1, 2246822519))``, one draw per character, ``ALPHABET[floor(r * 62)]``. A
  collision with an earlier stage's token is resolved by retrying with
  ``seed + attempt * 1000003`` (attempt = 1, 2, ...), reduced to int32 as JavaScript does.
* Display order: Fisher-Yates over the stages with ``mulberry32(sample.seed)`` when
  ``shuffle_rubric_order`` is on, otherwise canonical order.
"""

from __future__ import annotations

from collections.abc import Mapping

from judge_project.prng import mulberry32, seeded_shuffle

LABEL_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN_LENGTH = 6
_MASK = 0xFFFFFFFF
_SEED_MULTIPLIER = 2654435761
_INDEX_MULTIPLIER = 2246822519
_COLLISION_STEP = 1000003
MAX_LETTER_STAGES = 26


def _imul(a: int, b: int) -> int:
    return ((a & _MASK) * (b & _MASK)) & _MASK


def letter_labels(scale_size: int) -> list[str]:
    """``["A", "B", ...]``; more than 26 stages has no letter form (the original emitted ``[``)."""
    if not 1 <= scale_size <= MAX_LETTER_STAGES:
        raise ValueError(f"scale_size must be 1..{MAX_LETTER_STAGES}, got {scale_size}")
    return [chr(ord("A") + index) for index in range(scale_size)]


def seeded_token(seed: int, index: int) -> str:
    """The 6-character identifier for 0-based stage ``index`` under a 32-bit ``seed``."""
    rng = mulberry32(_imul(seed, _SEED_MULTIPLIER) ^ _imul(index + 1, _INDEX_MULTIPLIER))
    return "".join(LABEL_ALPHABET[int(rng() * len(LABEL_ALPHABET))] for _ in range(TOKEN_LENGTH))


def anonymized_label_mapping(scale_size: int, seed: int) -> dict[str, int]:
    """``{token: stage_number}`` with unique seeded tokens, in stage order."""
    if scale_size < 1:
        raise ValueError(f"scale_size must be positive, got {scale_size}")
    mapping: dict[str, int] = {}
    for index in range(scale_size):
        token = seeded_token(seed, index)
        attempt = 0
        while token in mapping:  # 62**6 tokens: practically never taken
            attempt += 1
            token = seeded_token((seed + attempt * _COLLISION_STEP) & _MASK, index)
        mapping[token] = index + 1
    return mapping


def build_label_mapping(scale_size: int, *, anonymize: bool, seed: int) -> dict[str, int]:
    """The rubric's ``label_mapping``, stored at rubric_gen apply time."""
    if anonymize:
        return anonymized_label_mapping(scale_size, seed)
    return {letter: index + 1 for index, letter in enumerate(letter_labels(scale_size))}


def tokens_by_stage(label_mapping: Mapping[str, int], scale_size: int) -> list[str]:
    """Identifier for each canonical stage 1..N (index 0 = stage 1).

    Stages missing from the mapping fall back to their letter, as in the original; entries
    outside 1..N are ignored.
    """
    tokens: list[str | None] = [None] * scale_size
    for token, stage in label_mapping.items():
        if 1 <= stage <= scale_size:
            tokens[stage - 1] = token
    return [
        token if token is not None else chr(ord("A") + index) for index, token in enumerate(tokens)
    ]


def display_order(n: int, seed: int, shuffle: bool) -> list[int]:
    """Canonical stage numbers (1-based) in the order the rubric is displayed to the model."""
    stages = list(range(1, n + 1))
    return seeded_shuffle(stages, seed) if shuffle else stages
