"""Stage advance: idempotent, driven by the transport's completions and by every tick.

``run_advance(run_id)`` under the run's row lock:

1. a queued run becomes running;
2. if the current stage has not been materialized, insert attempt-1 requests for every
   eligible target (bulk, ``ON CONFLICT DO NOTHING``) and record the stage as materialized;
3. else, if nothing of the stage is pending or in flight, the stage is *settled*: apply the
   partial-failure policy, honour ``pause_after``, then move to the next stage (materializing
   it in the same transaction) or complete the run.

Gating (DOMAIN.md 3.2): rubric_gen takes samples without a rubric; rubric_critic, samples with
a rubric; score_gen, targets whose sample has a rubric (the critic never gates); score_critic,
targets with a score. Everything below reads artifacts, so a duplicate advance is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from configs_app.spec import ExperimentSpec, parse_spec
from orchestration.models import STAGE_ORDER, LlmRequest, RequestStatus, Run, RunEvent, RunStatus
from orchestration.selectors import run_progress
from orchestration.services.stage_requests import stage_materialize
from policies.resolver import policy_resolve

logger = logging.getLogger(__name__)

RECONCILE_EVERY_S = 10.0


class BudgetExceededError(Exception):
    """A stage would take the run over its token or dollar budget (rolls the stage back)."""

    def __init__(self, stage: str, message: str, details: dict[str, object]) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.details = details


def run_advance(*, run_id: int) -> str:
    """Advance one run as far as the database allows. Returns what happened (for logs).

    A stage that would exceed the run's budget is rolled back whole (no request of it
    exists) and the run becomes ``blocked`` with the figures; raising the budget and resuming
    re-checks it.
    """
    try:
        return _advance(run_id)
    except BudgetExceededError as exc:
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=run_id)
            if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                run.status = RunStatus.BLOCKED
                run.last_error = exc.message
                run.save(update_fields=["status", "last_error", "updated_at"])
                _event(run, "run_blocked", exc.stage, {"reason": "budget", **exc.details})
        return "blocked_budget"


def _advance(run_id: int) -> str:
    with transaction.atomic():
        run = (
            Run.objects.select_for_update()
            .select_related("run_config", "experiment")
            .filter(pk=run_id)
            .first()
        )
        if run is None:
            return "missing"
        if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            return f"skip_{run.status}"
        now = timezone.now()
        if run.status == RunStatus.QUEUED:
            run.status = RunStatus.RUNNING
            run.started_at = now
            run.stage_started_at = now
            run.save(update_fields=["status", "started_at", "stage_started_at", "updated_at"])
            _event(run, "run_started", run.current_stage, {})
        spec = parse_spec(run.run_config.config_body)
        stage = run.current_stage
        if stage not in (run.materialized_stages or []):
            count = stage_materialize(run=run, stage=stage, spec=spec)
            budget_check(run=run, stage=stage, spec=spec)
            run.materialized_stages = [*(run.materialized_stages or []), stage]
            run.save(update_fields=["materialized_stages", "updated_at"])
            _event(run, "stage_materialized", stage, {"requests": count})
            if count:
                return "materialized"
        progress = run_progress(run=run)
        sp = progress.stage(stage)
        if sp.pending:
            return "waiting"
        # Settled.
        policy = str(
            (run.run_config.resolved_policy or {})
            .get("run", {})
            .get("partial_failure_policy", "fail_run")
        )
        eligible = sp.completed + sp.failed
        if sp.failed and (policy == "fail_run" or sp.completed == 0):
            run.status = RunStatus.FAILED
            run.completed_at = now
            run.last_error = (
                f"stage {stage}: {sp.failed} of {eligible} targets failed "
                f"(partial_failure_policy={policy})"
            )
            run.save(update_fields=["status", "completed_at", "last_error", "updated_at"])
            _event(run, "run_failed", stage, {"failed": sp.failed, "completed": sp.completed})
            return "failed"
        _event(run, "stage_settled", stage, {"completed": sp.completed, "failed": sp.failed})
        if run.pause_after == stage:
            run.status = RunStatus.PAUSED
            run.save(update_fields=["status", "updated_at"])
            _event(run, "run_paused", stage, {"reason": "pause_after"})
            return "paused_after"
        index = STAGE_ORDER.index(stage)
        if index == len(STAGE_ORDER) - 1:
            run.status = RunStatus.COMPLETED
            run.completed_at = now
            run.save(update_fields=["status", "completed_at", "updated_at"])
            _event(run, "run_completed", stage, {})
            return "completed"
        # Commit the stage change first, then materialize (same transaction here: the insert
        # is one bulk statement, so the original's advance-plus-fan-out rollback cannot recur).
        next_stage = STAGE_ORDER[index + 1]
        run.current_stage = next_stage
        run.stage_started_at = now
        run.save(update_fields=["current_stage", "stage_started_at", "updated_at"])
        _event(run, "stage_advanced", next_stage, {"from": stage})
        count = stage_materialize(run=run, stage=next_stage, spec=spec)
        budget_check(run=run, stage=next_stage, spec=spec)
        run.materialized_stages = [*(run.materialized_stages or []), next_stage]
        run.save(update_fields=["materialized_stages", "updated_at"])
        _event(run, "stage_materialized", next_stage, {"requests": count})
        if count == 0:
            # Nothing eligible (everything upstream failed under `continue`): settle now.
            transaction.on_commit(lambda: _enqueue_advance([run_id]))
        return "advanced"


def budget_check(*, run: Run, stage: str, spec: ExperimentSpec) -> None:
    """Raise BudgetExceededError when spent + this stage's estimate exceeds a budget.

    Budgets are read live from the policy rows (``global -> team -> provider -> model ->
    experiment``), so raising one and resuming a blocked run takes effect at once. The
    estimate is what the stage's attempt-1 rows could cost at most: their estimated input
    tokens plus the output cap, at the model's prices (batch discount when batchable).
    Retries can still overspend by their share; the next stage's check sees it.
    """
    model_id = spec.rubric.model if stage.startswith("rubric") else spec.scoring.model
    info = spec.resolved_models()[model_id]
    eff = policy_resolve(
        team=run.experiment.team.slug if run.experiment.team_id else None,  # type: ignore[union-attr]
        provider=info.provider,
        model=model_id,
        experiment=run.experiment.tag,
    )
    if eff.dollar_budget is None and eff.token_budget is None:
        return
    rows = LlmRequest.objects.filter(process=run.process)
    spent = rows.aggregate(cost=Sum("cost_usd"), tin=Sum("input_tokens"), tout=Sum("output_tokens"))
    stage_rows = rows.filter(stage=stage, attempt_index=1, status=RequestStatus.PENDING)
    est = stage_rows.aggregate(tin=Sum("est_input_tokens"), n=Count("id"))
    first = stage_rows.values_list("params", flat=True).first() or {}
    est_in = int(est["tin"] or 0)
    est_out = int(est["n"] or 0) * int(first.get("max_output_tokens", spec.max_output_tokens))
    factor = (1.0 - info.batch_discount) if info.batchable else 1.0
    est_cost = (
        factor
        * (est_in * info.input_price_per_mtok + est_out * info.output_price_per_mtok)
        / 1_000_000
    )
    spent_cost = float(spent["cost"] or 0.0)
    spent_tokens = int(spent["tin"] or 0) + int(spent["tout"] or 0)
    details: dict[str, object] = {
        "spent_usd": round(spent_cost, 6),
        "stage_estimate_usd": round(est_cost, 6),
        "spent_tokens": spent_tokens,
        "stage_estimate_tokens": est_in + est_out,
    }
    if eff.dollar_budget is not None and spent_cost + est_cost > float(eff.dollar_budget):
        source: dict[str, Any] = dict(eff.provenance.get("dollar_budget") or {})
        raise BudgetExceededError(
            stage,
            f"stage {stage} would exceed the dollar budget: spent ${spent_cost:.4f} + "
            f"estimated ${est_cost:.4f} > ${float(eff.dollar_budget):.4f} "
            f"(set by {source.get('scope')}:{source.get('key')}); raise it and resume",
            {**details, "dollar_budget": float(eff.dollar_budget)},
        )
    if eff.token_budget is not None and spent_tokens + est_in + est_out > int(eff.token_budget):
        source = dict(eff.provenance.get("token_budget") or {})
        raise BudgetExceededError(
            stage,
            f"stage {stage} would exceed the token budget: spent {spent_tokens} + estimated "
            f"{est_in + est_out} > {int(eff.token_budget)} "
            f"(set by {source.get('scope')}:{source.get('key')}); raise it and resume",
            {**details, "token_budget": int(eff.token_budget)},
        )


def _event(run: Run, event_type: str, stage: str, payload: dict[str, object]) -> None:
    RunEvent.objects.create(
        process=run.process, stage=stage, event_type=event_type, payload=payload
    )


def _enqueue_advance(run_ids: Iterable[int]) -> None:
    from orchestration import tasks

    for run_id in run_ids:
        tasks.run_advance.delay(run_id=run_id)


def runs_notify(processes: Iterable[str]) -> None:
    """Transport notifier: results landed for these ``run:<id>`` processes."""
    ids = sorted({int(p.split(":", 1)[1]) for p in processes if p.startswith("run:")})
    _enqueue_advance(ids)


def runs_reconcile(*, limit: int = 200) -> int:
    """The periodic fallback (every tick): advance every queued/running run.

    The original deferred reconcile with no periodic fallback and stranded runs (DOMAIN.md 7).
    Here a lost message costs at most one tick. Bounded: oldest-updated first.
    """
    from orchestration.transport.leases import lock_acquire, new_owner

    # Throttle: at most once per RECONCILE_EVERY_S across all ticks (a fresh owner only
    # acquires an expired lock).
    if not lock_acquire(name="reconcile:runs", owner=new_owner("rec"), ttl_s=RECONCILE_EVERY_S):
        return 0
    ids = list(
        Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    _enqueue_advance(ids)
    return len(ids)
