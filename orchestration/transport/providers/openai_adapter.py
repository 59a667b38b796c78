"""OpenAI Batch API and Chat Completions through the official ``openai`` SDK.

Batches: the shard is written as JSONL to a temporary file (one line at a time, never a whole
list in memory), uploaded with ``files.create(purpose="batch")`` and turned into a batch whose
``metadata.submission_key`` lets :meth:`OpenAIAdapter.find_batch` recover it after a crash
between "provider accepted" and "engine recorded the id" (PROOF.md F8).

SDK facts relied on (openai 3.x source):

- ``files.create`` with a ``(name, fileobj, content_type)`` tuple hands the open file to httpx2's
  multipart encoder, which streams it; passing a *path* would make the SDK ``read_bytes()`` the
  whole file into memory.
- ``batches.list`` returns a ``SyncCursorPage``; iterating it fetches further pages with
  ``after=<last id>`` until ``has_more`` is false, so stopping early stops fetching.
- ``files.with_streaming_response.content`` does not read the body; ``iter_lines`` pulls it
  chunk by chunk. Errors while reading the body are raw httpx2 exceptions, not SDK ones.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

import openai
import orjson

from orchestration.transport.providers._rows import iter_rows, parse_openai_line
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

ENDPOINT: Final = "/v1/chat/completions"
MAX_REQUESTS = 50_000  # per batch input file (documented)
MAX_BYTES = 200 * 1024 * 1024  # per batch input file (documented)
MAX_METADATA_KEYS = 16

_STATUS_MAP = {
    "validating": BatchState.RUNNING,
    "in_progress": BatchState.RUNNING,
    "finalizing": BatchState.RUNNING,
    "cancelling": BatchState.RUNNING,
    "completed": BatchState.COMPLETED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelled": BatchState.CANCELED,
}

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` for a JSON-schema structured output request."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": str(schema.get("title") or "judge_output")[:64],
            "schema": schema,
            "strict": True,
        },
    }


def chat_messages(req: ChatRequest) -> list[dict[str, str]]:
    messages = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    messages.append({"role": "user", "content": req.user})
    return messages


def request_body(req: ChatRequest) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body of one request (batch line ``body`` / direct call)."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": chat_messages(req),
        "max_completion_tokens": req.max_output_tokens,
    }
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.json_schema is not None:
        body["response_format"] = response_format(req.json_schema)
    return body


def batch_line(req: ChatRequest) -> bytes:
    """One ``BatchRequestInput`` line (without the newline)."""
    return orjson.dumps(
        {"custom_id": req.custom_id, "method": "POST", "url": ENDPOINT, "body": request_body(req)}
    )


class OpenAIAdapter:
    """:class:`~orchestration.transport.providers.base.ProviderAdapter` for OpenAI."""

    name = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        clock_skew_s: float = 300.0,
        find_page_size: int = 100,
        tmp_dir: str | None = None,
    ) -> None:
        self.client = client
        # find_batch looks this far before ``created_after``: provider and database clocks differ.
        self.clock_skew_s = clock_skew_s
        self.find_page_size = find_page_size
        self.tmp_dir = tmp_dir
        self.last_stream_stats = StreamStats()

    # --- batches ------------------------------------------------------------------------------

    def submit_batch(
        self, *, submission_key: str, requests: Iterable[ChatRequest], metadata: dict[str, str]
    ) -> BatchInfo:
        meta = {**metadata, "submission_key": submission_key}
        if len(meta) > MAX_METADATA_KEYS:
            raise ProviderError(ErrorClass.PERMANENT, f"metadata has {len(meta)} keys (max 16)")
        with tempfile.TemporaryFile(prefix="judge-batch-", suffix=".jsonl", dir=self.tmp_dir) as fh:
            n = 0
            for req in requests:
                fh.write(batch_line(req))
                fh.write(b"\n")
                n += 1
            size = fh.tell()
            if n == 0:
                raise ProviderError(ErrorClass.PERMANENT, "empty batch")
            if n > MAX_REQUESTS or size > MAX_BYTES:
                raise ProviderError(
                    ErrorClass.PERMANENT,
                    f"shard too large for one OpenAI batch: {n} requests, {size} bytes "
                    f"(max {MAX_REQUESTS}, {MAX_BYTES})",
                )
            fh.seek(0)
            filename = f"{_SAFE_NAME.sub('_', submission_key)[:100] or 'batch'}.jsonl"
            try:
                uploaded = self.client.files.create(
                    file=(filename, fh, "application/jsonl"), purpose="batch"
                )
            except Exception as exc:
                raise classify_exception(exc) from exc
        try:
            batch = self.client.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata=meta,
            )
        except Exception as exc:
            err = classify_exception(exc)
            if err.error_class in {ErrorClass.PERMANENT, ErrorClass.RATE_LIMIT, ErrorClass.QUOTA}:
                # A definite refusal: no batch references the upload, so remove it. (After a
                # timeout/5xx the batch may exist and own the file: leave it.)
                with contextlib.suppress(Exception):
                    self.client.files.delete(uploaded.id)
            raise err from exc
        return self._info(batch)

    def find_batch(
        self, *, submission_key: str, created_after: datetime, custom_ids: frozenset[str]
    ) -> BatchInfo | None:
        """Newest-first scan of ``batches.list`` for ``metadata.submission_key``.

        Stops at the first batch created before ``created_after - clock_skew_s``; ``None``
        means no such batch exists (safe to submit). ``custom_ids`` is not needed here.
        """
        cutoff = created_after.timestamp() - self.clock_skew_s
        try:
            for batch in self.client.batches.list(limit=self.find_page_size):
                if batch.created_at < cutoff:
                    break
                if (batch.metadata or {}).get("submission_key") == submission_key:
                    return self._info(batch)
        except Exception as exc:
            raise classify_exception(exc) from exc
        return None

    def get_batch(self, provider_batch_id: str) -> BatchInfo:
        try:
            return self._info(self.client.batches.retrieve(provider_batch_id))
        except Exception as exc:
            raise classify_exception(exc) from exc

    def cancel_batch(self, provider_batch_id: str) -> BatchInfo:
        """Request cancellation; cancelling an already finished batch is not an error."""
        try:
            return self._info(self.client.batches.cancel(provider_batch_id))
        except Exception as exc:
            err = classify_exception(exc)
            if err.error_class is ErrorClass.PERMANENT and err.status_code == 409:
                return self.get_batch(provider_batch_id)
            raise err from exc

    def iter_results(self, batch: BatchInfo) -> Iterator[ResultRow]:
        """Output file, then error file, streamed line by line (see module docstring).

        Raises ``ProviderError(TIMEOUT)`` when a download is cut: the rows yielded before the
        cut are good, ``last_stream_stats.complete`` stays False, and the caller re-downloads
        later (applying rows is idempotent; duplicates within one call are dropped).
        """
        stats = self.last_stream_stats = StreamStats()
        seen: set[str] = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                yield from self._stream_file(file_id, stats, seen)
        stats.complete = True

    def _stream_file(self, file_id: str, stats: StreamStats, seen: set[str]) -> Iterator[ResultRow]:
        try:
            with self.client.files.with_streaming_response.content(file_id) as resp:
                yield from iter_rows(resp.iter_lines(), parse_openai_line, stats, seen)
        except ProviderError:
            raise
        except Exception as exc:
            raise classify_exception(exc) from exc

    # --- direct -------------------------------------------------------------------------------

    def direct_call(self, request: ChatRequest, *, timeout: float) -> ResultRow:
        """One chat completion. The ``x-judge-custom-id`` header is ignored by OpenAI; the
        simulator logs it so duplicate direct calls can be counted per request row."""
        body = request_body(request)
        try:
            completion = self.client.chat.completions.create(
                **body, timeout=timeout, extra_headers={"x-judge-custom-id": request.custom_id}
            )
        except Exception as exc:
            raise classify_exception(exc) from exc
        usage = completion.usage
        tokens_in = usage.prompt_tokens if usage else 0
        tokens_out = usage.completion_tokens if usage else 0
        content = completion.choices[0].message.content if completion.choices else None
        if content is None:
            refusal = completion.choices[0].message.refusal if completion.choices else None
            return ResultRow(
                custom_id=request.custom_id,
                ok=False,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                error_class=ErrorClass.PARSE,
                error_message=f"no text content (refusal: {refusal!r})",
                raw=completion.model_dump_json()[:100_000],
            )
        return ResultRow(
            custom_id=request.custom_id,
            ok=True,
            output_text=content,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )

    # --- mapping ------------------------------------------------------------------------------

    @staticmethod
    def _info(batch: Any) -> BatchInfo:
        status = str(batch.status)
        state = _STATUS_MAP.get(status, BatchState.FAILED)
        errors: list[str] = []
        codes: set[str] = set()
        if batch.errors is not None and batch.errors.data:
            for e in batch.errors.data:
                codes.add(str(e.code or ""))
                where = f" (line {e.line})" if e.line is not None else ""
                errors.append(f"{e.code}: {e.message}{where}")
        error_class: ErrorClass | None = None
        if status not in _STATUS_MAP:
            errors.append(f"unknown batch status {status!r}")
            error_class = ErrorClass.UNKNOWN
        elif state is BatchState.FAILED:
            quota = "token_limit_exceeded" in codes or any(
                "enqueued token limit" in e.lower() for e in errors
            )
            error_class = ErrorClass.QUOTA if quota else ErrorClass.BATCH
        elif state in {BatchState.EXPIRED, BatchState.CANCELED}:
            error_class = ErrorClass.BATCH
        counts = batch.request_counts
        return BatchInfo(
            provider_batch_id=batch.id,
            state=state,
            raw_status=status,
            input_file_id=batch.input_file_id,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            request_counts=(
                {"total": counts.total, "completed": counts.completed, "failed": counts.failed}
                if counts is not None
                else {}
            ),
            created_at=datetime.fromtimestamp(batch.created_at, tz=UTC),
            metadata={str(k): str(v) for k, v in (batch.metadata or {}).items()},
            errors=errors,
            error_class=error_class,
        )
