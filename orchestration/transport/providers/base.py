"""The one small interface every provider adapter implements.

Why an interface: the tick only needs six operations (submit a shard, find a batch again by
its submission key, get status, stream results, cancel, direct call). OpenAI and Anthropic
differ in everything else (files vs inline requests, metadata vs none, result shapes); the
adapters hide that, and the simulator speaks both HTTP APIs so the real adapters run in tests.

Identity: the engine sends ``custom_id = provider_custom_id(request_pk)`` (``r<pk>``), which
satisfies Anthropic's ``^[a-zA-Z0-9_-]{1,64}$`` and maps back to exactly one attempt row.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


def provider_custom_id(request_pk: int) -> str:
    """The provider-safe id of one attempt row."""
    return f"r{request_pk}"


def request_pk_from_custom_id(custom_id: str) -> int | None:
    """Inverse of :func:`provider_custom_id`; ``None`` for ids the engine never sent."""
    if len(custom_id) < 2 or custom_id[0] != "r" or not custom_id[1:].isdigit():
        return None
    return int(custom_id[1:])


class ErrorClass(enum.StrEnum):
    """Classification of provider and parse failures; drives retry decisions."""

    RATE_LIMIT = "rate_limit"  # 429: retry after retry_after
    TIMEOUT = "timeout"  # connect/read timeout, connection dropped: retry
    SERVER = "server"  # 5xx / 529 overloaded: retry with backoff
    QUOTA = "quota"  # quota / enqueued-token limit: retry later, slowly
    PERMANENT = "permanent"  # auth, 4xx validation: never retry the same call
    MALFORMED = "malformed"  # provider response unreadable: retry
    PARSE = "parse"  # model output did not satisfy the contract: new attempt
    BATCH = "batch"  # the row's batch failed/expired/was canceled: new attempt
    MISSING = "missing"  # a batch ended without a row for this request: new attempt
    CANCELED = "canceled"  # canceled by an operator: no retry
    UNKNOWN = "unknown"


RETRYABLE_CLASSES = frozenset(
    {
        ErrorClass.RATE_LIMIT,
        ErrorClass.TIMEOUT,
        ErrorClass.SERVER,
        ErrorClass.QUOTA,
        ErrorClass.MALFORMED,
        ErrorClass.PARSE,
        ErrorClass.BATCH,
        ErrorClass.MISSING,
        ErrorClass.UNKNOWN,
    }
)


class ProviderError(Exception):
    """A classified provider failure. ``retry_after`` (seconds) is honoured when set."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.retry_after = retry_after
        self.status_code = status_code

    @property
    def retryable(self) -> bool:
        return self.error_class in RETRYABLE_CLASSES


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One LLM call as the engine sees it (provider-neutral)."""

    custom_id: str
    model: str  # the provider's model id (e.g. "gpt-4.1-2025-04-14")
    system: str | None
    user: str
    max_output_tokens: int
    temperature: float | None = None
    json_schema: dict[str, Any] | None = None  # optional structured-output request


class BatchState(enum.StrEnum):
    """Provider batch states mapped onto what the engine acts on."""

    RUNNING = "running"  # validating / in_progress / finalizing / cancelling / canceling
    COMPLETED = "completed"  # results ready (OpenAI completed, Anthropic ended)
    FAILED = "failed"
    EXPIRED = "expired"  # may still have partial results
    CANCELED = "canceled"  # may still have partial results


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A provider batch as last seen."""

    provider_batch_id: str
    state: BatchState
    raw_status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_url: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    created_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # For FAILED/EXPIRED/CANCELED: how to classify the rows that got no result. QUOTA when the
    # provider refused the batch for its enqueued-token limit (retry later, slowly), else BATCH.
    error_class: ErrorClass | None = None

    @property
    def has_results(self) -> bool:
        """Whether results can be streamed (complete, or partial after expiry/cancel)."""
        return bool(self.output_file_id or self.error_file_id or self.results_url)


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One row of a batch result (or one direct call's outcome)."""

    custom_id: str
    ok: bool
    output_text: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    error_class: ErrorClass | None = None
    error_message: str | None = None
    raw: str | None = None  # the raw line/body for forensics when not ok


@dataclass(slots=True)
class StreamStats:
    """What the last ``iter_results`` saw (``adapter.last_stream_stats``), for logs and events.

    ``rows`` counts yielded rows (``ok + errors + malformed``). ``malformed`` lines were yielded
    as ``MALFORMED`` rows because their custom_id could be recovered; ``unrecoverable`` lines
    were skipped (their ids show up as missing). ``duplicates`` were later lines for a
    custom_id already yielded (skipped: the first one wins). ``complete`` is False until the
    stream ended normally (a cut download raises ``ProviderError(TIMEOUT)`` and leaves it False).
    """

    rows: int = 0
    ok: int = 0
    errors: int = 0
    malformed: int = 0
    unrecoverable: int = 0
    duplicates: int = 0
    lines: int = 0
    complete: bool = False


class ProviderAdapter(Protocol):
    """What the tick calls. Implementations must be safe to construct per task."""

    name: str

    def submit_batch(
        self, *, submission_key: str, requests: Iterable[ChatRequest], metadata: dict[str, str]
    ) -> BatchInfo:
        """Upload (if needed) and create one batch. Raises :class:`ProviderError`."""
        ...

    def find_batch(
        self, *, submission_key: str, created_after: datetime, custom_ids: frozenset[str]
    ) -> BatchInfo | None:
        """Find a batch created by an earlier ``submit_batch`` whose outcome was unknown.

        OpenAI: match ``metadata.submission_key`` among batches listed newest first.
        Anthropic (no metadata): batches created after ``created_after`` whose result ids
        equal ``custom_ids``; raises ``ProviderError(TIMEOUT)`` while a candidate is still
        running and cannot be decided yet. ``None`` means: certainly never created.
        """
        ...

    def get_batch(self, provider_batch_id: str) -> BatchInfo: ...

    def iter_results(self, batch: BatchInfo) -> Iterator[ResultRow]:
        """Stream result rows (output and error files merged), never loading a file whole."""
        ...

    def cancel_batch(self, provider_batch_id: str) -> BatchInfo: ...

    def direct_call(self, request: ChatRequest, *, timeout: float) -> ResultRow:
        """One synchronous call; provider failures raise :class:`ProviderError`."""
        ...
