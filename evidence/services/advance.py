"""Window stage machinery: materialize transform requests, settle stages, complete or fail.

``window_advance(window_run_id)`` is the window twin of ``run_advance``: idempotent, run under
the window run's row lock, driven by the transport's completions (notifier), the collect
chain, and the periodic reconciler. Every decision reads artifacts and attempt rows, so a
duplicated or late message is a no-op.

1. Only ``running`` window runs advance (``queued`` = collection pending; paused/terminal
   runs wait for an operator).
2. Right after collection the run sits at ``l0_raw``: enter the first transform stage.
3. A stage not yet materialized gets attempt-1 requests for every *eligible* evidence row
   (DOMAIN.md 3.1 step 4: the previous level exists, this level and its request id are null,
   and no request exists for ``evidence:<id>:<stage>``), inserted in bulk with
   ``ON CONFLICT DO NOTHING``; the stage is then recorded as materialized in the same
   transaction.
4. A materialized stage with nothing pending or in flight is *settled*:
   ``completed == 0 and failed > 0`` fails the window run; otherwise partial failure is
   tolerated (failed rows are simply not eligible downstream) and the run enters the next
   stage, or completes once ``target_stage`` is settled and nothing of the process is in
   flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, cast

from django.db import transaction
from django.db.models import CharField, Exists, OuterRef, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from configs_app.registry import DEFAULT_MODELS, ModelInfo
from evidence.models import Evidence, EvidenceView, WindowRun, WindowRunStatus
from evidence.prompts import TransformStage, transform_prompt
from evidence.selectors import stages_through, window_progress
from evidence.services.handlers import REQUEST_FIELD, SOURCE_FIELD, evidence_key
from orchestration.models import LlmRequest, RunEvent, TransportHold
from orchestration.transport.services.enqueue import RequestSpec, llm_requests_enqueue

logger = logging.getLogger(__name__)

CHUNK = 1000
DEFAULT_MAX_OUTPUT_TOKENS = 8000  # an l1 output can be as long as its (20k-char) input


def window_event(run: WindowRun, event_type: str, stage: str, payload: dict[str, Any]) -> None:
    """Append one ledger event for the window run (coarse: stage- and failure-level only)."""
    RunEvent.objects.create(
        process=run.process, stage=stage, event_type=event_type, payload=payload
    )


def _policy_field(run: WindowRun, name: str, default: Any) -> Any:
    fields = (run.resolved_policy or {}).get("policy", {}).get("fields", {})
    value = fields.get(name, {}).get("value")
    return default if value is None else value


class _RequestFactory:
    """Per-request knobs frozen at collect time (registry entry + resolved policy)."""

    def __init__(self, run: WindowRun) -> None:
        model_id = run.window.model
        info: ModelInfo = DEFAULT_MODELS[model_id]
        self.run = run
        self.model_id = model_id
        self.info = info
        mode = str(_policy_field(run, "batch_mode", "auto"))
        self.route_hint = {"disabled": "direct", "force": "batch"}.get(mode, "auto")
        cap = _policy_field(run, "output_token_cap", None)
        self.max_output = (
            min(DEFAULT_MAX_OUTPUT_TOKENS, int(cap)) if cap else DEFAULT_MAX_OUTPUT_TOKENS
        )
        self.max_attempts = int(_policy_field(run, "max_request_attempts", 3))
        self.params = {
            "backoff_s": float(_policy_field(run, "retry_backoff_seconds", 60)),
            "jitter": float(_policy_field(run, "retry_jitter_ratio", 0.2)),
            "input_price_per_mtok": info.input_price_per_mtok,
            "output_price_per_mtok": info.output_price_per_mtok,
            "batch_discount": info.batch_discount,
        }

    def make(self, *, evidence_id: int, stage: TransformStage, source: str) -> RequestSpec:
        prompt = transform_prompt(stage, source)
        return RequestSpec(
            custom_key=evidence_key(evidence_id, stage),
            process=self.run.process,
            stage=stage,
            provider=self.info.provider,
            model=self.model_id,
            provider_model=self.info.provider_model,
            system_prompt=prompt.system,
            user_prompt=prompt.user,
            prompt_version=prompt.version,
            max_output_tokens=self.max_output,
            max_attempts=self.max_attempts,
            batchable=self.info.batchable,
            route_hint=self.route_hint,
            params=dict(self.params),
        )


def _eligible(run: WindowRun, stage: str) -> Iterator[tuple[int, str]]:
    """``(evidence_id, source_text)`` for every evidence row that may enter ``stage``."""
    source = SOURCE_FIELD[stage]
    key = Concat(Value("evidence:"), Cast("id", output_field=CharField()), Value(f":{stage}"))
    has_request = Exists(LlmRequest.objects.filter(custom_key=OuterRef("request_key")))
    rows = (
        Evidence.objects.filter(
            window_run=run,
            **{
                f"{source}__isnull": False,
                f"{stage}__isnull": True,
                f"{REQUEST_FIELD[stage]}__isnull": True,
            },
        )
        .annotate(request_key=key)
        .filter(~has_request)
        .order_by("pk")
        .values_list("pk", source)
    )
    for evidence_id, text in rows.iterator(chunk_size=CHUNK):
        yield int(evidence_id), str(text)


def stage_materialize(*, run: WindowRun, stage: str) -> int:
    """Insert attempt-1 requests for every eligible evidence row of ``stage``; returns inserted.

    Idempotent: eligibility excludes keys that already have a request, and the insert is
    ``ON CONFLICT (custom_key, attempt_index) DO NOTHING`` besides.
    """
    factory = _RequestFactory(run)
    typed = cast("TransformStage", stage)
    inserted = 0
    batch: list[RequestSpec] = []
    for evidence_id, source in _eligible(run, stage):
        batch.append(factory.make(evidence_id=evidence_id, stage=typed, source=source))
        if len(batch) >= CHUNK:
            inserted += llm_requests_enqueue(specs=batch).inserted
            batch = []
    if batch:
        inserted += llm_requests_enqueue(specs=batch).inserted
    return inserted


def _enter_stage(run: WindowRun, stage: str, now: Any) -> str:
    """Make ``stage`` current and materialize it (same transaction)."""
    previous = run.current_stage
    run.current_stage = stage
    run.stage_started_at = now
    started = time.monotonic()
    count = stage_materialize(run=run, stage=stage)
    run.materialized_stages = [*(run.materialized_stages or []), stage]
    run.save(
        update_fields=["current_stage", "stage_started_at", "materialized_stages", "updated_at"]
    )
    window_event(
        run,
        "stage_advanced",
        stage,
        {
            "from": previous,
            "requests": count,
            "materialize_s": round(time.monotonic() - started, 3),
        },
    )
    if count == 0:
        # Nothing eligible (or everything already requested by an earlier attempt at this
        # transition): settle now rather than waiting for a completion that never comes.
        run_id = run.pk
        transaction.on_commit(lambda: windows_advance_enqueue([run_id]))
    return "advanced"


def _finish(run: WindowRun, status: str, now: Any, last_error: str = "") -> None:
    run.status = status
    run.completed_at = now
    if last_error:
        run.last_error = last_error
    run.save(update_fields=["status", "completed_at", "last_error", "updated_at"])
    TransportHold.objects.filter(process=run.process).delete()


def window_advance(*, window_run_id: int) -> str:
    """Advance one window run as far as the database allows. Returns what happened."""
    with transaction.atomic():
        run = (
            WindowRun.objects.select_for_update(of=("self",))
            .select_related("window")
            .filter(pk=window_run_id)
            .first()
        )
        if run is None:
            return "missing"
        if run.status != WindowRunStatus.RUNNING:
            return f"skip_{run.status}"
        now = timezone.now()
        stages = stages_through(run.target_stage)
        if run.current_stage == EvidenceView.L0_RAW:
            if not stages:
                _finish(run, WindowRunStatus.COMPLETED, now)
                window_event(run, "window_run_completed", EvidenceView.L0_RAW, {})
                return "completed"
            return _enter_stage(run, stages[0], now)
        stage = run.current_stage
        if stage not in (run.materialized_stages or []):
            count = stage_materialize(run=run, stage=stage)
            run.materialized_stages = [*(run.materialized_stages or []), stage]
            run.save(update_fields=["materialized_stages", "updated_at"])
            window_event(run, "stage_materialized", stage, {"requests": count})
            if count:
                return "materialized"
        progress = window_progress(run=run)
        sp = progress.stage(stage)
        if sp.pending:
            return "waiting"
        if sp.completed == 0 and sp.failed > 0:
            _finish(
                run,
                WindowRunStatus.FAILED,
                now,
                f"stage {stage}: all {sp.failed} eligible evidence failed "
                "(no output survived its attempts; see the failed requests' errors)",
            )
            window_event(run, "window_run_failed", stage, {"failed": sp.failed})
            return "failed"
        window_event(
            run,
            "stage_settled",
            stage,
            {"completed": sp.completed, "failed": sp.failed, "skipped": sp.skipped},
        )
        index = stages.index(stage) if stage in stages else len(stages) - 1
        if index >= len(stages) - 1:
            if progress.in_flight_total:
                return "waiting"
            _finish(run, WindowRunStatus.COMPLETED, now)
            window_event(run, "window_run_completed", stage, {"completed": sp.completed})
            return "completed"
        return _enter_stage(run, stages[index + 1], now)


def windows_advance_enqueue(window_run_ids: Iterable[int]) -> None:
    """Send ``evidence.window_advance`` for each id (call after commit)."""
    from evidence import tasks

    for window_run_id in window_run_ids:
        tasks.window_advance.delay(window_run_id=window_run_id)


def windows_notify(processes: Iterable[str]) -> None:
    """Transport notifier: results landed for these ``window:<id>`` processes.

    The transport calls notifiers from ``transaction.on_commit``, so enqueueing here is
    already after commit.
    """
    ids = sorted({int(p.split(":", 1)[1]) for p in processes if p.startswith("window:")})
    windows_advance_enqueue(ids)
