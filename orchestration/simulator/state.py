"""In-process state of one simulator: files, batches, limits, stats, and result generation.

Memory stays flat with the number of requests: request and result bodies live in files under
``data_dir`` and are read/written line by line; in memory there is one small record per file
and per batch, the submission counters, and the rate-limit windows.

Threading: request handlers run on the event loop; reading a batch's input and writing its
results run in a small thread pool so a 50k-row batch never blocks other requests. Records are
only mutated on the loop; worker threads get immutable inputs and return a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import re
import shutil
import tempfile
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from orchestration.simulator import shapes
from orchestration.simulator.config import Responder, SimulatorConfig
from orchestration.simulator.faults import (
    BATCH_FAULTS,
    LIMIT_FAULTS,
    ROW_FAULTS,
    FaultRule,
    FaultSet,
)
from orchestration.simulator.responder import garbage_text, load_responder
from orchestration.simulator.submissions import SubmissionLog

log = logging.getLogger(__name__)

ANTHROPIC_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OPENAI_MAX_REQUESTS = 50_000
ANTHROPIC_MAX_REQUESTS = 100_000
DAY_S = 24 * 3600

OPENAI_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(slots=True)
class FileRec:
    """An OpenAI file: metadata here, bytes on disk."""

    id: str
    filename: str
    purpose: str
    size: int
    created_at: int
    path: Path

    def to_json(self) -> dict[str, Any]:
        return shapes.openai_file(
            file_id=self.id,
            filename=self.filename,
            purpose=self.purpose,
            size=self.size,
            created_at=self.created_at,
        )


@dataclass(slots=True)
class BatchRec:
    """One batch of either provider. ``status`` uses OpenAI's vocabulary internally."""

    provider: str
    id: str
    created_at: float
    n: int
    est_tokens: int
    model: str | None
    input_path: Path
    rng_seed: int
    outcome: str = "complete"  # complete | fail | expire | cancel (planned by batch faults)
    outcome_params: dict[str, Any] = field(default_factory=dict)
    status: str = "validating"
    # OpenAI only
    input_file_id: str = ""
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    # Anthropic only
    results_path: Path | None = None
    # lifecycle
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    ended_at: float | None = None
    cancelling_at: float | None = None
    cancel_fraction: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    finalizing: asyncio.Task[None] | None = None

    @property
    def terminal(self) -> bool:
        return self.status in OPENAI_TERMINAL


@dataclass(slots=True)
class GenResult:
    """What a worker thread produced for one ended batch."""

    completed: int = 0
    failed: int = 0
    canceled: int = 0
    expired: int = 0
    out_path: Path | None = None
    err_path: Path | None = None
    out_bytes: int = 0
    err_bytes: int = 0


class RateWindows:
    """Sliding 60 s windows for rpm/tpm rules, keyed by (rule, provider, model)."""

    def __init__(self) -> None:
        self._events: dict[tuple[int, str, str], deque[tuple[float, float]]] = {}
        self._sums: dict[tuple[int, str, str], float] = {}

    def _window(self, key: tuple[int, str, str], now: float) -> deque[tuple[float, float]]:
        dq = self._events.setdefault(key, deque())
        total = self._sums.get(key, 0.0)
        while dq and dq[0][0] <= now - 60.0:
            total -= dq.popleft()[1]
        self._sums[key] = total
        return dq

    def check(self, key: tuple[int, str, str], amount: float, limit: float, now: float) -> float:
        """0 if ``amount`` fits now, else seconds until it would."""
        dq = self._window(key, now)
        if self._sums[key] + amount <= limit:
            return 0.0
        if amount > limit:
            return 60.0
        # Free enough capacity: walk the oldest events until the remainder fits.
        need = self._sums[key] + amount - limit
        freed = 0.0
        for ts, amt in dq:
            freed += amt
            if freed >= need:
                return max(0.001, ts + 60.0 - now)
        return 60.0

    def add(self, key: tuple[int, str, str], amount: float, now: float) -> None:
        self._window(key, now).append((now, amount))
        self._sums[key] += amount

    def current(self, now: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in list(self._events):
            self._window(key, now)
            out[f"rule{key[0]}:{key[1]}:{key[2]}"] = self._sums[key]
        return out

    def clear(self) -> None:
        self._events.clear()
        self._sums.clear()


class SimState:
    """Everything one simulator instance knows."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._own_dir = config.data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="judge-sim-"))
            if config.data_dir is None
            else Path(config.data_dir)
        )
        self.files_dir = self.data_dir / "files"
        self.anthropic_dir = self.data_dir / "anthropic"
        for d in (self.files_dir, self.anthropic_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.batch_duration_s = config.batch_duration_s
        self.seed = config.seed
        self.rng = random.Random(config.seed)
        self.faults = FaultSet(config.faults)
        self.responder: Responder
        self.responder, self.responder_label = load_responder(config)
        self.files: dict[str, FileRec] = {}
        self.batches: dict[str, BatchRec] = {}
        self.order: dict[str, list[str]] = {"openai": [], "anthropic": []}  # oldest first
        self.submissions = SubmissionLog(self.data_dir / "submissions.jsonl")
        self.calls: Counter[str] = Counter()
        self.faults_fired: Counter[str] = Counter()
        self.direct_times: deque[float] = deque()
        self.windows = RateWindows()
        self.started_at = time.time()
        self._seq = 0
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sim-batch")
        self.stopping = asyncio.Event()

    # --- ids / time ---------------------------------------------------------------------

    def next_id(self, prefix: str, length: int = 24) -> str:
        """Deterministic per seed, ordered by creation (the sequence number leads)."""
        self._seq += 1
        tail = hashlib.sha256(f"{self.seed}:{prefix}:{self._seq}".encode()).hexdigest()
        return f"{prefix}{self._seq:08x}{tail[: max(0, length - 8)]}"

    @staticmethod
    def now() -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep that ends early when the simulator stops (no hung shutdown)."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def run_in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def fire_log(self, rule: FaultRule) -> None:
        self.faults_fired[rule.fault] += 1

    # --- limits ---------------------------------------------------------------------------

    def direct_text(
        self, *, provider: str, model: str, system: str | None, user: str, seed: str
    ) -> str:
        """A direct call's reply: the responder's text, or garbage under ``malformed_output``.

        The row-level fault applies to direct calls too (op ``chat``/``messages``), so parse
        failures can be exercised on both routes.
        """
        op = "chat" if provider == "openai" else "messages"
        if self.faults.first_firing(frozenset({"malformed_output"}), provider, op, self.rng):
            return garbage_text(seed)
        return self.responder(model=model, system=system, user=user, seed=seed)

    def check_limits(
        self, *, provider: str, op: str, model: str, tokens: float
    ) -> tuple[float, FaultRule] | None:
        """rpm/tpm for a direct call: (retry_after, rule) when over a limit, else record it."""
        now = self.now()
        rules = self.faults.matching(frozenset({"rpm", "tpm"}), provider, op)
        keyed = []
        for rule in rules:
            idx = id(rule)
            key = (idx, provider, model if rule.param("per_model", True) else "*")
            amount = 1.0 if rule.fault == "rpm" else tokens
            wait = self.windows.check(key, amount, float(rule.param("limit")), now)
            if wait > 0:
                rule.fired += 1
                self.fire_log(rule)
                return wait, rule
            keyed.append((key, amount))
        for key, amount in keyed:
            self.windows.add(key, amount, now)
        return None

    def enqueued_tokens(self, provider: str, model: str | None) -> int:
        return sum(
            b.est_tokens
            for b in self.batches.values()
            if b.provider == provider and not b.terminal and (model is None or b.model == model)
        )

    def enqueued_limit(
        self, provider: str, op: str, model: str | None, tokens: int
    ) -> FaultRule | None:
        """The first ``enqueued_token_limit`` rule this new batch would break."""
        for rule in self.faults.matching(frozenset({"enqueued_token_limit"}), provider, op):
            per_model = rule.param("per_model", True)
            used = self.enqueued_tokens(provider, model if per_model else None)
            if used + tokens > float(rule.param("limit")):
                rule.fired += 1
                self.fire_log(rule)
                return rule
        return None

    def plan_outcome(self, provider: str) -> tuple[str, dict[str, Any]]:
        """Roll the batch outcome faults once, at creation."""
        rule = self.faults.first_firing(BATCH_FAULTS, provider, "batches_create", self.rng)
        if rule is None:
            return "complete", {}
        self.fire_log(rule)
        return rule.fault.removeprefix("batch_"), dict(rule.params)

    def register(self, batch: BatchRec) -> None:
        self.batches[batch.id] = batch
        self.order[batch.provider].append(batch.id)

    # --- lifecycle --------------------------------------------------------------------------

    async def refresh(self, batch: BatchRec, *, first_look: bool = False) -> None:
        """Advance ``batch`` by the clock; generates results (in a thread) when it ends.

        With ``batch_duration_s == 0`` a batch ends at its first retrieval after creation (the
        creation response itself still says validating/in_progress, like the real APIs).
        """
        if batch.terminal or first_look:
            return
        if batch.finalizing is not None:
            await asyncio.shield(batch.finalizing)
            return
        now = self.now()
        duration = self.batch_duration_s
        if batch.validation_errors:
            batch.status = "failed"
            batch.ended_at = now
            return
        if batch.outcome == "fail" and batch.provider == "openai":
            batch.validation_errors = [
                {
                    "code": str(batch.outcome_params.get("code", "batch_failed")),
                    "message": str(batch.outcome_params.get("message", "Simulated batch failure.")),
                    "param": None,
                    "line": None,
                }
            ]
            batch.status = "failed"
            batch.ended_at = now
            return
        if batch.cancelling_at is not None:
            if now >= batch.cancelling_at + self.config.cancel_delay_s:
                await self._finalize(batch, "cancelled", batch.cancel_fraction or 0.0, "error")
            return
        elapsed = now - batch.created_at
        if elapsed >= duration:
            kind = {"expire": "expired", "cancel": "cancelled"}.get(batch.outcome, "completed")
            fraction = (
                float(batch.outcome_params.get("partial", 0.0)) if kind != "completed" else 1.0
            )
            if kind == "cancelled":
                batch.cancelling_at = batch.cancelling_at or now
            await self._finalize(
                batch, kind, fraction, str(batch.outcome_params.get("rest", "error"))
            )
            return
        if batch.in_progress_at is None and elapsed >= 0.1 * duration:
            batch.in_progress_at = batch.created_at + 0.1 * duration
        if elapsed >= 0.9 * duration:
            batch.finalizing_at = batch.finalizing_at or batch.created_at + 0.9 * duration
            batch.status = "finalizing"
        elif batch.in_progress_at is not None:
            batch.status = "in_progress"

    def request_cancel(self, batch: BatchRec) -> None:
        now = self.now()
        if batch.terminal or batch.cancelling_at is not None:
            return
        duration = self.batch_duration_s
        batch.cancel_fraction = (
            min(1.0, (now - batch.created_at) / duration) if duration > 0 else 0.0
        )
        batch.cancelling_at = now
        batch.status = "cancelling"

    async def _finalize(self, batch: BatchRec, kind: str, fraction: float, rest: str) -> None:
        async def work() -> None:
            row_rules = self.faults.matching(ROW_FAULTS, batch.provider, None)
            gen = generate_openai if batch.provider == "openai" else generate_anthropic
            try:
                result: GenResult = await self.run_in_thread(
                    gen, self, batch, kind, fraction, rest, row_rules
                )
            except Exception as exc:
                # A simulator bug must not wedge the batch (every poll would re-raise): fail it.
                log.exception("simulator: generating results of %s failed", batch.id)
                batch.validation_errors = [
                    {
                        "code": "simulator_error",
                        "message": str(exc)[:500],
                        "param": None,
                        "line": None,
                    }
                ]
                batch.status = "failed"
                batch.ended_at = self.now()
                return
            self._apply(batch, kind, result)

        batch.finalizing = asyncio.ensure_future(work())
        try:
            await asyncio.shield(batch.finalizing)
        finally:
            if batch.finalizing.done():
                batch.finalizing = None

    def _apply(self, batch: BatchRec, kind: str, result: GenResult) -> None:
        now = self.now()
        created = int(now)
        if batch.provider == "openai":
            if result.out_path is not None and result.out_bytes > 0:
                fid = self.next_id("file-")
                self.files[fid] = FileRec(
                    fid,
                    f"{batch.id}_output.jsonl",
                    "batch_output",
                    result.out_bytes,
                    created,
                    result.out_path,
                )
                batch.output_file_id = fid
            if result.err_path is not None and result.err_bytes > 0:
                fid = self.next_id("file-")
                self.files[fid] = FileRec(
                    fid,
                    f"{batch.id}_error.jsonl",
                    "batch_output",
                    result.err_bytes,
                    created,
                    result.err_path,
                )
                batch.error_file_id = fid
            for p, size in (
                (result.out_path, result.out_bytes),
                (result.err_path, result.err_bytes),
            ):
                if p is not None and size == 0:
                    p.unlink(missing_ok=True)
            batch.counts = {
                "total": batch.n,
                "completed": result.completed,
                "failed": result.failed + result.expired + result.canceled,
            }
        else:
            batch.results_path = result.out_path
            batch.counts = {
                "processing": 0,
                "succeeded": result.completed,
                "errored": result.failed,
                "canceled": result.canceled,
                "expired": result.expired,
            }
        batch.in_progress_at = batch.in_progress_at or batch.created_at
        batch.finalizing_at = batch.finalizing_at or now
        batch.status = kind
        batch.ended_at = now

    # --- admin ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear faults, limit windows, counters and the submission log (keep batches/files)."""
        self.faults.replace([])
        self.windows.clear()
        self.rng = random.Random(self.seed)
        self.calls.clear()
        self.faults_fired.clear()
        self.direct_times.clear()
        self.submissions.reset()

    def note_direct(self) -> None:
        """Count one accepted direct call for ``direct_rpm`` (window trimmed as it goes)."""
        self.direct_times.append(self.now())
        self.direct_rpm()

    def direct_rpm(self) -> int:
        now = self.now()
        while self.direct_times and self.direct_times[0] <= now - 60.0:
            self.direct_times.popleft()
        return len(self.direct_times)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.submissions.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# --- result generation (worker threads) ---------------------------------------------------------


class _RowFates:
    """Per-row fault rolls with the batch's own RNG (replayable, independent of other batches)."""

    def __init__(self, state: SimState, rules: list[FaultRule], rng: random.Random) -> None:
        self._state = state
        self._rng = rng
        self._by_kind: dict[str, list[FaultRule]] = {}
        for rule in rules:
            self._by_kind.setdefault(rule.fault, []).append(rule)

    def roll(self, kind: str) -> FaultRule | None:
        for rule in self._by_kind.get(kind, ()):
            if self._state.faults.fire(rule, self._rng):
                return rule
        return None

    def corrupt(self, line: bytes, rule: FaultRule) -> bytes:
        """A broken JSON line: cut after the custom_id (recoverable) or pure garbage."""
        variant = rule.param("variant", "mixed")
        if variant == "mixed":
            variant = "truncate" if self._rng.random() < 0.5 else "garbage"
        if variant == "truncate":
            cut = line.find(b'"custom_id"')
            end = line.find(b'"', line.find(b":", cut) + 2) + 1 if cut >= 0 else 10
            return line[: max(end + 5, min(len(line) - 1, end + 20))]
        return b"\x00\xff#not-json " + hashlib.sha256(line).hexdigest()[:16].encode()


def _respond(state: SimState, model: str, system: str | None, user: str, seed: str) -> str | None:
    """The responder's text, or None when it raised (the row becomes a 500 row error)."""
    try:
        return state.responder(model=model, system=system, user=user, seed=seed)
    except Exception:
        log.exception("simulator responder failed for %s", seed)
        return None


def generate_openai(
    state: SimState,
    batch: BatchRec,
    kind: str,
    fraction: float,
    rest: str,
    rules: list[FaultRule],
) -> GenResult:
    """Write the output and error files of an ended OpenAI batch, streaming from its input."""
    fates = _RowFates(state, rules, random.Random(batch.rng_seed))
    processed = batch.n if kind == "completed" else math.floor(fraction * batch.n)
    out_path = state.files_dir / f"{batch.id}_output.jsonl"
    err_path = state.files_dir / f"{batch.id}_error.jsonl"
    res = GenResult(out_path=out_path, err_path=err_path)
    created = int(time.time())
    with (
        batch.input_path.open("rb") as fin,
        out_path.open("wb", buffering=1 << 20) as fout,
        err_path.open("wb", buffering=1 << 20) as ferr,
    ):
        idx = -1
        for raw in fin:
            if not raw.strip():
                continue
            idx += 1
            req = orjson.loads(raw)
            cid = req["custom_id"]
            body = req.get("body") or {}
            row_id = f"batch_req_{batch.id[6:22]}{idx:08x}"
            if idx >= processed:
                if rest == "omit":
                    continue
                code = "batch_expired" if kind == "expired" else "batch_cancelled"
                msg = (
                    "This request could not be executed before the completion window expired."
                    if kind == "expired"
                    else "This request was not executed because the batch was cancelled."
                )
                line = orjson.dumps(
                    {
                        "id": row_id,
                        "custom_id": cid,
                        "response": None,
                        "error": {"code": code, "message": msg},
                    }
                )
                ferr.write(line + b"\n")
                if kind == "expired":
                    res.expired += 1
                else:
                    res.canceled += 1
                continue
            if fates.roll("missing_row") is not None:
                continue
            err_rule = fates.roll("row_error")
            if err_rule is not None:
                status = int(err_rule.param("status_code", 500))
                etype = (
                    "server_error"
                    if status >= 500
                    else ("rate_limit_error" if status == 429 else "invalid_request_error")
                )
                payload = shapes.openai_error(
                    str(err_rule.param("message", f"Simulated row error ({status}).")),
                    etype,
                    code=err_rule.param("code"),
                )
                line = orjson.dumps(
                    {
                        "id": row_id,
                        "custom_id": cid,
                        "response": {
                            "status_code": status,
                            "request_id": f"req_{row_id[10:]}",
                            "body": payload,
                        },
                        "error": None,
                    }
                )
                ferr.write(line + b"\n")
                res.failed += 1
                continue
            model = str(body.get("model", batch.model or "unknown"))
            system, user = shapes.openai_prompt(list(body.get("messages") or []))
            answer = _respond(state, model, system, user, cid)
            if answer is None:
                payload = shapes.openai_error("Simulator responder failed.", "server_error")
                line = orjson.dumps(
                    {
                        "id": row_id,
                        "custom_id": cid,
                        "response": {
                            "status_code": 500,
                            "request_id": f"req_{row_id[10:]}",
                            "body": payload,
                        },
                        "error": None,
                    }
                )
                ferr.write(line + b"\n")
                res.failed += 1
                continue
            text = garbage_text(cid) if fates.roll("malformed_output") is not None else answer
            max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
            text, truncated = shapes.cap_output(
                text, max_tokens if isinstance(max_tokens, int) else None
            )
            prompt_tokens = shapes.estimate_tokens((system or "") + user)
            completion = shapes.chat_completion(
                completion_id=f"chatcmpl-{row_id[10:]}",
                model=model,
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=shapes.estimate_tokens(text),
                truncated=truncated,
                created=created,
            )
            line = orjson.dumps(
                {
                    "id": row_id,
                    "custom_id": cid,
                    "response": {
                        "status_code": 200,
                        "request_id": f"req_{row_id[10:]}",
                        "body": completion,
                    },
                    "error": None,
                }
            )
            bad = fates.roll("malformed_line")
            if bad is not None:
                line = fates.corrupt(line, bad)
            fout.write(line + b"\n")
            if fates.roll("duplicate_row") is not None:
                fout.write(line + b"\n")
            res.completed += 1
        res.out_bytes = fout.tell()
        res.err_bytes = ferr.tell()
    return res


def generate_anthropic(
    state: SimState,
    batch: BatchRec,
    kind: str,
    fraction: float,
    rest: str,
    rules: list[FaultRule],
) -> GenResult:
    """Write the results JSONL of an ended Anthropic batch, streaming from its stored requests."""
    fates = _RowFates(state, rules, random.Random(batch.rng_seed))
    failed_batch = batch.outcome == "fail"
    processed = batch.n if kind == "completed" else math.floor(fraction * batch.n)
    out_path = state.anthropic_dir / f"{batch.id}.results.jsonl"
    res = GenResult(out_path=out_path)
    with batch.input_path.open("rb") as fin, out_path.open("wb", buffering=1 << 20) as fout:
        idx = -1
        for raw in fin:
            if not raw.strip():
                continue
            idx += 1
            req = orjson.loads(raw)
            cid = req["custom_id"]
            params = req.get("params") or {}
            if idx >= processed:
                if rest == "omit":
                    continue
                rtype = "expired" if kind == "expired" else "canceled"
                fout.write(orjson.dumps({"custom_id": cid, "result": {"type": rtype}}) + b"\n")
                if rtype == "expired":
                    res.expired += 1
                else:
                    res.canceled += 1
                continue
            if fates.roll("missing_row") is not None:
                continue
            err_rule = fates.roll("row_error")
            if failed_batch or err_rule is not None:
                status = int(err_rule.param("status_code", 500)) if err_rule else 500
                etype = str(
                    (err_rule.param("code") if err_rule else None)
                    or shapes.ANTHROPIC_ERROR_TYPES.get(status, "api_error")
                )
                msg = (
                    str(err_rule.param("message", f"Simulated row error ({status})."))
                    if err_rule
                    else str(batch.outcome_params.get("message", "Simulated batch failure."))
                )
                line = orjson.dumps(
                    {
                        "custom_id": cid,
                        "result": {
                            "type": "errored",
                            "error": {"type": "error", "error": {"type": etype, "message": msg}},
                        },
                    }
                )
                fout.write(line + b"\n")
                res.failed += 1
                continue
            model = str(params.get("model", "unknown"))
            system, user = shapes.anthropic_prompt(
                params.get("system"), list(params.get("messages") or [])
            )
            answer = _respond(state, model, system, user, cid)
            if answer is None:
                error = {"type": "api_error", "message": "Simulator responder failed."}
                line = orjson.dumps(
                    {
                        "custom_id": cid,
                        "result": {"type": "errored", "error": {"type": "error", "error": error}},
                    }
                )
                fout.write(line + b"\n")
                res.failed += 1
                continue
            text = garbage_text(cid) if fates.roll("malformed_output") is not None else answer
            max_tokens = params.get("max_tokens")
            text, truncated = shapes.cap_output(
                text, max_tokens if isinstance(max_tokens, int) else None
            )
            message = shapes.anthropic_message(
                message_id=f"msg_{batch.id[9:25]}{idx:08x}",
                model=model,
                text=text,
                input_tokens=shapes.estimate_tokens((system or "") + user),
                output_tokens=shapes.estimate_tokens(text),
                truncated=truncated,
            )
            line = orjson.dumps(
                {"custom_id": cid, "result": {"type": "succeeded", "message": message}}
            )
            bad = fates.roll("malformed_line")
            if bad is not None:
                line = fates.corrupt(line, bad)
            fout.write(line + b"\n")
            if fates.roll("duplicate_row") is not None:
                fout.write(line + b"\n")
            res.completed += 1
        res.out_bytes = fout.tell()
    return res


def is_limit_rule(rule: FaultRule) -> bool:
    return rule.fault in LIMIT_FAULTS
