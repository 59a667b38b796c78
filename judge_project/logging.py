"""Structured logs with correlation ids.

Why: an operator following one run across web, beat and several workers greps for its
``run_id``; every record therefore carries ``run_id``, ``stage``, ``batch_id``, ``task_id``
and ``custom_key`` when they are known. They live in ``contextvars`` so code anywhere below a
``correlate(...)`` block logs them without passing them around.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

CORRELATION_FIELDS = ("run_id", "window_run_id", "stage", "batch_id", "task_id", "custom_key")

_EMPTY: dict[str, object] = {}
# The default is never mutated: correlate() always sets a fresh merged dict.
_context: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar(
    "judge_correlation",
    default=_EMPTY,
)


def current_correlation() -> dict[str, object]:
    """The correlation fields bound in this context (a copy)."""
    return dict(_context.get())


@contextlib.contextmanager
def correlate(**fields: object) -> Iterator[None]:
    """Bind correlation fields for the duration of the block (nested blocks merge)."""
    unknown = set(fields) - set(CORRELATION_FIELDS)
    if unknown:
        raise ValueError(f"unknown correlation fields: {sorted(unknown)}")
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class CorrelationFilter(logging.Filter):
    """Copy the bound correlation fields onto every record (never overriding explicit extras)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _context.get()
        for name in CORRELATION_FIELDS:
            if not hasattr(record, name) and name in bound:
                setattr(record, name, bound[name])
        record.correlation = " ".join(f"{k}={v}" for k, v in bound.items())
        return True
