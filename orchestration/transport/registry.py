"""Result-handler registry: how domain code plugs into the transport.

The transport applies provider results without knowing what a rubric or an evidence
transform is. Domain apps register a :class:`ResultHandler` for a custom_key prefix
(``sample``, ``sample_score_target``, ``evidence``); the transport hands it whole chunks of
successful results (bulk, inside the chunk's transaction) and collects the ones the domain
rejected (parse failures) to retry them as new attempts.

Domain apps also register *process notifiers* (called with the set of processes a chunk
touched, e.g. ``{"run:12"}``, to enqueue an idempotent advance after commit) and *reconcilers*
(called by every tick to re-derive due work; the periodic fallback the original lacked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AppliedResult:
    """A successful provider result offered to the domain handler."""

    request_id: int
    custom_key: str
    attempt_index: int
    process: str
    stage: str
    output_text: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """The domain refused an output (it will be retried as a new attempt, raw output kept)."""

    error_class: str
    message: str


@dataclass(frozen=True, slots=True)
class ExhaustedKey:
    """A custom key whose last attempt failed terminally."""

    custom_key: str
    process: str
    stage: str
    error_class: str
    message: str


class ResultHandler(Protocol):
    def apply(self, results: Sequence[AppliedResult]) -> dict[int, Rejection]:
        """Store artifacts for ``results`` (idempotently); return rejections by request id."""
        ...

    def exhausted(self, keys: Sequence[ExhaustedKey]) -> None:
        """React to keys that will not be retried (may be a no-op: state is derived)."""
        ...


_handlers: dict[str, ResultHandler] = {}
_notifiers: dict[str, Callable[[Iterable[str]], None]] = {}
_reconcilers: dict[str, Callable[[], object]] = {}


def key_prefix(custom_key: str) -> str:
    return custom_key.split(":", 1)[0]


def register_handler(prefix: str, handler: ResultHandler) -> None:
    """Register the handler for custom keys ``<prefix>:...`` (idempotent re-registration)."""
    _handlers[prefix] = handler


def handler_for(custom_key: str) -> ResultHandler:
    prefix = key_prefix(custom_key)
    try:
        return _handlers[prefix]
    except KeyError as exc:
        raise LookupError(
            f"no result handler registered for custom_key prefix {prefix!r}; "
            "register one in the owning app's AppConfig.ready()"
        ) from exc


def register_process_notifier(prefix: str, notifier: Callable[[Iterable[str]], None]) -> None:
    """``prefix`` is the process kind (``run``/``window``)."""
    _notifiers[prefix] = notifier


def notify_processes(processes: Iterable[str]) -> None:
    by_prefix: dict[str, list[str]] = {}
    for process in processes:
        by_prefix.setdefault(key_prefix(process), []).append(process)
    for prefix, items in by_prefix.items():
        notifier = _notifiers.get(prefix)
        if notifier is not None:
            notifier(items)


def register_reconciler(name: str, reconciler: Callable[[], object]) -> None:
    _reconcilers[name] = reconciler


def reconcilers() -> list[tuple[str, Callable[[], object]]]:
    return sorted(_reconcilers.items())
