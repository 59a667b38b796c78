"""mulberry32 vectors computed from the algorithm's definition (JS semantics, by hand-checked
reference values), and Fisher-Yates behaviour."""

from __future__ import annotations

from judge_project.prng import mulberry32, seeded_shuffle, to_int32


def _reference(seed: int, n: int) -> list[float]:
    # Independent re-statement of the JS algorithm using Python ints and explicit masks.
    a = seed & 0xFFFFFFFF
    out = []
    for _ in range(n):
        a = (a + 0x6D2B79F5) % 2**32
        t = ((a ^ (a >> 15)) * (1 | a)) % 2**32
        t = ((t + ((t ^ (t >> 7)) * (61 | t)) % 2**32) % 2**32) ^ t
        out.append(((t ^ (t >> 14)) % 2**32) / 2**32)
    return out


def test_known_first_values() -> None:
    # mulberry32(0) and mulberry32(1) first outputs as produced by the JavaScript function.
    assert mulberry32(0)() == 0.26642920868471265
    assert mulberry32(1)() == 0.6270739405881613


def test_matches_restatement_for_many_seeds() -> None:
    for seed in (0, 1, 7, 42, 2**31 - 1, -1, -123456, 0xDEADBEEF):
        rng = mulberry32(seed)
        assert [rng() for _ in range(50)] == _reference(seed, 50)


def test_shuffle_is_deterministic_permutation() -> None:
    items = list(range(20))
    a = seeded_shuffle(items, 7)
    assert a == seeded_shuffle(items, 7)
    assert sorted(a) == items
    assert a != items
    assert seeded_shuffle(items, 8) != a
    assert items == list(range(20))  # input untouched


def test_int32() -> None:
    assert to_int32(0xFFFFFFFF) == -1
    assert to_int32(0x7FFFFFFF) == 2**31 - 1
