"""The single documented PRNG: mulberry32 plus Fisher-Yates, bit-compatible with the original.

Why our own: reproducibility across the original TypeScript engine and this one depends on
identical sequences for the same 32-bit seed (label tokens, display shuffles, round-robin
bundles). JavaScript semantics are reproduced with explicit 32-bit masking.

Reference (JavaScript)::

    function mulberry32(a) {
      return function () {
        a |= 0; a = (a + 0x6d2b79f5) | 0;
        let t = Math.imul(a ^ (a >>> 15), 1 | a);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
      };
    }
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
_MASK = 0xFFFFFFFF


def _imul(a: int, b: int) -> int:
    """``Math.imul``: 32-bit multiply, result as an unsigned 32-bit pattern."""
    return ((a & _MASK) * (b & _MASK)) & _MASK


def mulberry32(seed: int) -> Callable[[], float]:
    """Return a generator of floats in [0, 1) for a 32-bit seed (negative seeds wrap)."""
    state = seed & _MASK

    def next_float() -> float:
        nonlocal state
        state = (state + 0x6D2B79F5) & _MASK
        a = state
        t = _imul(a ^ (a >> 15), 1 | a)
        t = ((t + _imul(t ^ (t >> 7), 61 | t)) & _MASK) ^ t
        return ((t ^ (t >> 14)) & _MASK) / 4294967296

    return next_float


def seeded_shuffle(items: Sequence[T], seed: int) -> list[T]:
    """Fisher-Yates from the end, ``j = floor(rng() * (i + 1))``, on a copy."""
    out = list(items)
    rng = mulberry32(seed)
    for i in range(len(out) - 1, 0, -1):
        j = int(rng() * (i + 1))
        out[i], out[j] = out[j], out[i]
    return out


def to_int32(value: int) -> int:
    """Reinterpret a 32-bit pattern as a signed int32 (the original stores seeds as int32)."""
    value &= _MASK
    return value - 0x1_0000_0000 if value >= 0x8000_0000 else value
