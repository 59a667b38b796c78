"""Label tokens and display order.

The literal vectors were produced by running the original JavaScript algorithm
(utils/randomize.ts ``generateLabelMapping`` and ``shuffleWithSeed``) under Node; the
hand-derived test restates the token algorithm directly on ``judge_project.prng``.
"""

from __future__ import annotations

import re

import pytest

from judge_project.prng import mulberry32, seeded_shuffle
from orchestration.judging import labels
from orchestration.judging.labels import (
    LABEL_ALPHABET,
    anonymized_label_mapping,
    build_label_mapping,
    display_order,
    letter_labels,
    seeded_token,
    tokens_by_stage,
)

JS_VECTORS = [
    (0, {"5ujsgh": 1, "qE8Cs1": 2, "oWVPXg": 3, "5lxSbK": 4}, [4, 3, 1, 2]),
    (1, {"zOkXrf": 1, "qF0bWX": 2, "Oh5yMD": 3, "HOnNCG": 4}, [4, 2, 1, 3]),
    (7, {"EufGED": 1, "2TRU47": 2, "wRHZgk": 3, "F1jk0l": 4}, [3, 2, 4, 1]),
    (-1, {"mMLFlF": 1, "OtJYgA": 2, "ly6RSZ": 3, "s34nW0": 4}, [3, 2, 1, 4]),
    (2147483647, {"qcOygo": 1, "7PZVdS": 2, "UWrGWi": 3, "usy0y4": 4}, [4, 3, 1, 2]),
    (-2147483648, {"D0zRUW": 1, "p4XNZD": 2, "PNcrdD": 3, "0bPSYz": 4}, [1, 3, 2, 4]),
    (123456789, {"6Ur4db": 1, "bRdXiI": 2, "uDQ0AE": 3, "qKe6gX": 4}, [1, 4, 3, 2]),
]


@pytest.mark.parametrize(("seed", "mapping", "order"), JS_VECTORS)
def test_matches_original_vectors(seed: int, mapping: dict[str, int], order: list[int]) -> None:
    assert anonymized_label_mapping(4, seed) == mapping
    assert display_order(4, seed, shuffle=True) == order


def test_nine_stage_vector() -> None:
    assert anonymized_label_mapping(9, 7) == {
        "EufGED": 1,
        "2TRU47": 2,
        "wRHZgk": 3,
        "F1jk0l": 4,
        "P0PPq3": 5,
        "4ieNvK": 6,
        "H6ERFH": 7,
        "c2vf6h": 8,
        "jjqE3U": 9,
    }
    assert display_order(9, 7, shuffle=True) == [6, 8, 4, 2, 3, 5, 7, 9, 1]


def _hand_token(seed: int, index: int) -> str:
    # Math.imul(seed | 0, 2654435761) ^ Math.imul(index + 1, 2246822519), as 32-bit patterns.
    sub_seed = ((seed * 2654435761) % 2**32) ^ (((index + 1) * 2246822519) % 2**32)
    rng = mulberry32(sub_seed)
    return "".join(LABEL_ALPHABET[int(rng() * 62)] for _ in range(6))


@pytest.mark.parametrize("seed", [0, 1, 42, -5, 2**31 - 1, -(2**31), 987654321])
def test_hand_derived_tokens(seed: int) -> None:
    for index in range(9):
        assert seeded_token(seed, index) == _hand_token(seed, index)


def test_alphabet_order() -> None:
    assert (
        LABEL_ALPHABET == "0123456789" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    )


def test_shape_and_determinism() -> None:
    for seed in range(-50, 50):
        mapping = anonymized_label_mapping(7, seed * 7919)
        assert mapping == anonymized_label_mapping(7, seed * 7919)
        assert sorted(mapping.values()) == list(range(1, 8))
        assert all(re.fullmatch(r"[0-9a-zA-Z]{6}", token) for token in mapping)
    assert anonymized_label_mapping(5, 1) != anonymized_label_mapping(5, 2)


def test_collision_retries_with_offset_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    def fake(seed: int, index: int) -> str:
        calls.append((seed, index))
        return "AAAAAA" if seed == 10 else f"T{seed}"

    monkeypatch.setattr(labels, "seeded_token", fake)
    mapping = anonymized_label_mapping(3, 10)
    # A taken token is retried with seed + attempt * 1000003 (attempt = 1, 2, ...).
    assert calls == [(10, 0), (10, 1), (1000013, 1), (10, 2), (1000013, 2), (2000016, 2)]
    assert mapping == {"AAAAAA": 1, "T1000013": 2, "T2000016": 3}


def test_letters() -> None:
    assert letter_labels(4) == ["A", "B", "C", "D"]
    assert build_label_mapping(3, anonymize=False, seed=99) == {"A": 1, "B": 2, "C": 3}
    assert build_label_mapping(3, anonymize=True, seed=7) == {
        "EufGED": 1,
        "2TRU47": 2,
        "wRHZgk": 3,
    }
    with pytest.raises(ValueError, match="scale_size"):
        letter_labels(27)


def test_tokens_by_stage_inverts_with_letter_fallback() -> None:
    assert tokens_by_stage({"x1": 2, "y2": 1, "bad": 9}, 3) == ["y2", "x1", "C"]


def test_display_order() -> None:
    assert display_order(5, 123, shuffle=False) == [1, 2, 3, 4, 5]
    shuffled = display_order(5, 123, shuffle=True)
    assert shuffled == seeded_shuffle([1, 2, 3, 4, 5], 123)
    assert sorted(shuffled) == [1, 2, 3, 4, 5]
    assert display_order(5, 123, shuffle=True) == shuffled
