"""The simulator's submission log: what the "provider" accepted, for the loss/duplicate verifier.

Every accepted batch row and direct call is one entry ``(key, provider, kind, batch_id, ts)``
where ``key`` is the custom_id (batch rows; direct calls that send ``x-judge-custom-id``) or a
prompt hash. Entries go to an append-only JSONL file; in memory only compact counters are kept
so 10^6 entries stay cheap: engine ids ``r<pk>`` are bits in paged bitmaps (64 KiB per 512k
consecutive pks), other keys a set, and only keys seen more than once get a dict entry.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

_PAGE_BITS = 1 << 19  # 512k ids per 64 KiB page


class _PagedBitset:
    """A set of non-negative ints stored as bits in lazily allocated pages."""

    __slots__ = ("_pages",)

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}

    def test_and_set(self, n: int) -> bool:
        """Set bit ``n``; return whether it was already set."""
        page_no, bit = divmod(n, _PAGE_BITS)
        page = self._pages.get(page_no)
        if page is None:
            page = self._pages[page_no] = bytearray(_PAGE_BITS // 8)
        byte, mask = bit >> 3, 1 << (bit & 7)
        seen = bool(page[byte] & mask)
        page[byte] |= mask
        return seen

    def contains(self, n: int) -> bool:
        page_no, bit = divmod(n, _PAGE_BITS)
        page = self._pages.get(page_no)
        return page is not None and bool(page[bit >> 3] & (1 << (bit & 7)))


def _engine_pk(key: str) -> int | None:
    if len(key) > 1 and key[0] == "r" and key[1:].isdigit() and len(key) < 20:
        return int(key[1:])
    return None


class SubmissionLog:
    """Thread-safe: batch creation logs rows from worker threads."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._fh = path.open("ab", buffering=1 << 20)
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._engine_ids = _PagedBitset()
        self._other: set[str] = set()
        self._dups: dict[str, int] = {}
        self.total = 0
        self.by_provider: Counter[str] = Counter()
        self.by_kind: Counter[str] = Counter()

    def _seen_before(self, key: str) -> bool:
        pk = _engine_pk(key)
        if pk is not None:
            return self._engine_ids.test_and_set(pk)
        if key in self._other:
            return True
        self._other.add(key)
        return False

    def record_many(
        self, keys: Iterable[str], *, provider: str, kind: str, batch_id: str | None
    ) -> int:
        """Log one entry per key; returns how many were logged."""
        ts = round(time.time(), 3)
        n = 0
        with self._lock:
            write = self._fh.write
            for key in keys:
                write(
                    orjson.dumps(
                        {
                            "key": key,
                            "provider": provider,
                            "kind": kind,
                            "batch_id": batch_id,
                            "ts": ts,
                        }
                    )
                )
                write(b"\n")
                if self._seen_before(key):
                    self._dups[key] = self._dups.get(key, 1) + 1
                n += 1
            self.total += n
            self.by_provider[provider] += n
            self.by_kind[kind] += n
        return n

    def record(self, key: str, *, provider: str, kind: str, batch_id: str | None = None) -> None:
        self.record_many((key,), provider=provider, kind=kind, batch_id=batch_id)

    def count(self, key: str) -> int:
        with self._lock:
            if key in self._dups:
                return self._dups[key]
            pk = _engine_pk(key)
            seen = self._engine_ids.contains(pk) if pk is not None else key in self._other
            return 1 if seen else 0

    def summary(self) -> dict[str, Any]:
        with self._lock:
            extra = sum(c - 1 for c in self._dups.values())
            return {
                "total": self.total,
                "unique": self.total - extra,
                "duplicated_keys": len(self._dups),
                "extra_submissions": extra,
                "by_provider": dict(self.by_provider),
                "by_kind": dict(self.by_kind),
                # Every key not listed here was accepted exactly once (or never).
                "duplicates": dict(self._dups),
            }

    def open_for_read(self) -> BinaryIO:
        """The full log (JSONL) for reading; flushed first. The caller closes it."""
        with self._lock:
            self._fh.flush()
            return self._path.open("rb")

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()

    def reset(self) -> None:
        with self._lock:
            self._fh.close()
            self._fh = self._path.open("wb", buffering=1 << 20)
            self._reset_counters()

    def close(self) -> None:
        with self._lock:
            self._fh.close()
