"""Anthropic Message Batches and Messages through the official ``anthropic`` SDK.

Anthropic batches carry their requests inline (no file upload) and have **no metadata**, so a
batch whose creation outcome is unknown cannot be looked up by submission key. Instead
:meth:`AnthropicAdapter.find_batch` lists batches created since the submission intent and
identifies ours by its request ids (conformance/ANTHROPIC.md).

SDK facts relied on (anthropic 2.x source):

- ``messages.batches.results(id)`` first *retrieves* the batch, raises a plain
  ``AnthropicError`` if it has no ``results_url`` yet, then GETs that absolute URL with
  ``stream=True``. It returns a ``JSONLDecoder`` whose iteration reads 64-byte chunks and
  ``json.loads`` every line: one malformed line would end the whole iteration with a
  ``JSONDecodeError``. The adapter therefore reads ``decoder.http_response.iter_lines()`` (the
  same unread streamed response) and parses each line itself, tolerating bad lines.
- ``messages.create`` without an explicit timeout computes one from ``max_tokens`` and may
  refuse non-streaming calls it expects to be long; the adapter always passes ``timeout``.
- Errors while reading a streamed body are raw httpx2 exceptions (see ``errors.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import orjson

from orchestration.transport.providers._rows import (
    iter_rows,
    message_text,
    parse_anthropic_line,
    recover_custom_id,
)
from orchestration.transport.providers.base import (
    BatchInfo,
    BatchState,
    ChatRequest,
    ErrorClass,
    ProviderError,
    ResultRow,
    StreamStats,
)
from orchestration.transport.providers.errors import classify_exception

MAX_REQUESTS = 100_000  # per batch (documented)
MAX_BYTES = 256 * 1024 * 1024  # per batch request body (documented)
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

_STATUS_MAP = {
    "in_progress": BatchState.RUNNING,
    "canceling": BatchState.RUNNING,
    "ended": BatchState.COMPLETED,
}


def message_params(req: ChatRequest) -> dict[str, Any]:
    """Messages API parameters of one request (batch ``params`` / direct call)."""
    params: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_output_tokens,
        "messages": [{"role": "user", "content": req.user}],
    }
    if req.system:
        params["system"] = req.system
    # ``temperature`` is deliberately not sent: the installed SDK (API version 2026-10-21) no
    # longer has the parameter on ``messages.create`` nor on batch request params, so the
    # current API would reject it. Sampling is left at the model default.
    if req.json_schema is not None:
        params["output_config"] = {"format": {"type": "json_schema", "schema": req.json_schema}}
    return params


class AnthropicAdapter:
    """:class:`~orchestration.transport.providers.base.ProviderAdapter` for Anthropic."""

    name = "anthropic"

    def __init__(
        self, client: anthropic.Anthropic, *, clock_skew_s: float = 300.0, find_page_size: int = 100
    ) -> None:
        self.client = client
        self.clock_skew_s = clock_skew_s
        self.find_page_size = find_page_size
        self.last_stream_stats = StreamStats()

    # --- batches ------------------------------------------------------------------------------

    def submit_batch(
        self, *, submission_key: str, requests: Iterable[ChatRequest], metadata: dict[str, str]
    ) -> BatchInfo:
        """Create one batch. ``submission_key``/``metadata`` cannot be sent (no such field)."""
        items: list[dict[str, Any]] = []
        size = 0
        for req in requests:
            if not CUSTOM_ID.match(req.custom_id):
                raise ProviderError(
                    ErrorClass.PERMANENT,
                    f"custom_id {req.custom_id!r} does not match ^[a-zA-Z0-9_-]{{1,64}}$",
                )
            item = {"custom_id": req.custom_id, "params": message_params(req)}
            size += len(orjson.dumps(item)) + 1
            items.append(item)
        if not items:
            raise ProviderError(ErrorClass.PERMANENT, "empty batch")
        if len(items) > MAX_REQUESTS or size > MAX_BYTES:
            raise ProviderError(
                ErrorClass.PERMANENT,
                f"shard too large for one Anthropic batch: {len(items)} requests, ~{size} bytes "
                f"(max {MAX_REQUESTS}, {MAX_BYTES})",
            )
        try:
            batch = self.client.messages.batches.create(requests=items)  # type: ignore[arg-type]
        except Exception as exc:
            raise classify_exception(exc) from exc
        return self._info(batch)

    def find_batch(
        self, *, submission_key: str, created_after: datetime, custom_ids: frozenset[str]
    ) -> BatchInfo | None:
        """Find the batch holding exactly this shard's requests, created after the intent.

        Candidates are batches created since ``created_after - clock_skew_s`` whose request
        total equals ``len(custom_ids)``. An ended candidate is adopted when its results carry
        only ids of this shard (the streaming check stops at the first foreign id); since
        request ids are unique per attempt row, one shared id already proves identity, and
        requiring "no foreign id" plus an equal total makes it the exact set in practice
        (while tolerating a result line the provider lost). A candidate still running cannot
        be decided: ``ProviderError(TIMEOUT, "undecided")`` tells the caller to ask again
        later. ``None``: no such batch, safe to submit.
        """
        cutoff = created_after.timestamp() - self.clock_skew_s
        want = len(custom_ids)
        undecided: list[str] = []
        try:
            for batch in self.client.messages.batches.list(limit=self.find_page_size):
                if batch.created_at.timestamp() < cutoff:
                    break
                counts = batch.request_counts
                total = (
                    counts.processing
                    + counts.succeeded
                    + counts.errored
                    + counts.canceled
                    + counts.expired
                )
                if total != want:
                    continue
                if batch.processing_status != "ended":
                    undecided.append(batch.id)
                    continue
                if self._results_match(batch.id, custom_ids):
                    return self._info(batch)
        except ProviderError:
            raise
        except Exception as exc:
            raise classify_exception(exc) from exc
        if undecided:
            raise ProviderError(
                ErrorClass.TIMEOUT,
                f"undecided: candidate batches still processing: {', '.join(undecided)}",
            )
        return None

    def _results_match(self, batch_id: str, custom_ids: frozenset[str]) -> bool:
        decoder = self.client.messages.batches.results(batch_id)
        matched = 0
        try:
            for line in decoder.http_response.iter_lines():
                if not line or line.isspace():
                    continue
                try:
                    cid = orjson.loads(line).get("custom_id")
                except (orjson.JSONDecodeError, AttributeError):
                    cid = recover_custom_id(line)
                if cid is None:
                    continue
                if cid not in custom_ids:
                    return False
                matched += 1
        finally:
            decoder.close()
        return matched > 0

    def get_batch(self, provider_batch_id: str) -> BatchInfo:
        try:
            return self._info(self.client.messages.batches.retrieve(provider_batch_id))
        except Exception as exc:
            raise classify_exception(exc) from exc

    def cancel_batch(self, provider_batch_id: str) -> BatchInfo:
        try:
            return self._info(self.client.messages.batches.cancel(provider_batch_id))
        except Exception as exc:
            err = classify_exception(exc)
            if err.error_class is ErrorClass.PERMANENT and err.status_code == 409:
                return self.get_batch(provider_batch_id)
            raise err from exc

    def iter_results(self, batch: BatchInfo) -> Iterator[ResultRow]:
        """Stream the results JSONL (see module docstring for why not the SDK's decoder).

        Raises ``ProviderError(TIMEOUT)`` if results are not available yet or the download is
        cut; rows yielded before a cut are good and ``last_stream_stats.complete`` stays False.
        """
        stats = self.last_stream_stats = StreamStats()
        seen: set[str] = set()
        try:
            decoder = self.client.messages.batches.results(batch.provider_batch_id)
        except anthropic.APIError as exc:
            raise classify_exception(exc) from exc
        except anthropic.AnthropicError as exc:
            # The SDK's own "No `results_url` ... Has it finished processing?" (not an HTTP error).
            raise ProviderError(ErrorClass.TIMEOUT, f"results not available yet: {exc}") from exc
        except Exception as exc:
            raise classify_exception(exc) from exc
        try:
            yield from iter_rows(
                decoder.http_response.iter_lines(), parse_anthropic_line, stats, seen
            )
        except ProviderError:
            raise
        except Exception as exc:
            raise classify_exception(exc) from exc
        finally:
            decoder.close()
        stats.complete = True

    # --- direct -------------------------------------------------------------------------------

    def direct_call(self, request: ChatRequest, *, timeout: float) -> ResultRow:
        """One Messages call (``x-judge-custom-id`` as in the OpenAI adapter)."""
        params = message_params(request)
        try:
            message = self.client.messages.create(
                **params, timeout=timeout, extra_headers={"x-judge-custom-id": request.custom_id}
            )
        except Exception as exc:
            raise classify_exception(exc) from exc
        tokens_in = message.usage.input_tokens if message.usage else 0
        tokens_out = message.usage.output_tokens if message.usage else 0
        text = message_text([block.model_dump() for block in message.content])
        if text is None:
            return ResultRow(
                custom_id=request.custom_id,
                ok=False,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                error_class=ErrorClass.PARSE,
                error_message=f"no text content (stop_reason {message.stop_reason!r})",
                raw=message.model_dump_json()[:100_000],
            )
        return ResultRow(
            custom_id=request.custom_id,
            ok=True,
            output_text=text,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )

    # --- mapping ------------------------------------------------------------------------------

    @staticmethod
    def _info(batch: Any) -> BatchInfo:
        status = str(batch.processing_status)
        state = _STATUS_MAP.get(status, BatchState.FAILED)
        errors: list[str] = []
        error_class: ErrorClass | None = None
        if status not in _STATUS_MAP:
            errors.append(f"unknown processing_status {status!r}")
            error_class = ErrorClass.UNKNOWN
        if batch.cancel_initiated_at is not None:
            errors.append(f"cancel initiated at {batch.cancel_initiated_at.isoformat()}")
        counts = batch.request_counts
        created = batch.created_at
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return BatchInfo(
            provider_batch_id=batch.id,
            state=state,
            raw_status=status,
            results_url=batch.results_url,
            request_counts={
                "processing": counts.processing,
                "succeeded": counts.succeeded,
                "errored": counts.errored,
                "canceled": counts.canceled,
                "expired": counts.expired,
            },
            created_at=created,
            errors=errors,
            error_class=error_class,
        )
