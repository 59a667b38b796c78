"""Run summary: adjudicative geometry, reliability and cost of one run, from aggregate SQL.

What researchers compare across runs (DOMAIN.md 1): the verdict distribution, abstain rate,
mean subset size and singleton rate; what operators need to trust a run (DOMAIN.md 7: parser
fragility was the dominant scientific failure): parse-failure rates, attempts and retries per
stage; and what it cost: tokens, ``cost_usd`` (already priced at batch rates for batch-routed
requests) and how many requests went batch vs direct.

Why aggregates and not the export rows: a summary of a 10^6-target run must not stream the
run through Python. Every number here is one ``GROUP BY`` over an indexed column (``run_id``
on artifacts, ``process`` on requests and events), a constant number of statements per run.

Definitions (so two readers compute the same thing):
* ``distribution``: per canonical stage, the number of scores whose decoded set contains it; a
  subset verdict counts once for each selected stage, so the counts can sum to more than the
  number of scores. Stages 1..scale_size are always present (zero when never chosen).
* ``abstain_rate``: abstained scores / scores. ``mean_subset_size`` and ``singleton_rate``
  are over non-abstained scores (an abstention has no subset).
* ``parse_failure_rate`` (per stage): failed attempts with ``error_class='parse'`` / all
  attempts of the stage. ``retries``: attempts with ``attempt_index > 1``.
* ``duration_s`` (per stage): from the RunEvent ledger, stage start (``run_started`` for the
  first stage, else ``stage_advanced`` into it) to stage end (``stage_advanced`` out of it, or
  ``run_completed``); null when either event is missing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Avg, Count, Min, Q, Sum

from configs_app.spec import parse_spec
from orchestration.models import (
    STAGE_ORDER,
    LlmRequest,
    RubricCritic,
    Run,
    RunEvent,
    Score,
    ScoreCritic,
    ScoreTarget,
)

_ROUTES = ("batch", "direct")


def _score_stats(run: Run) -> dict[str, Any]:
    """Counts, abstentions and subset sizes of the run's scores: one statement."""
    table = Score._meta.db_table
    length = (
        "jsonb_array_length(decoded_scores)"
        if connection.vendor == "postgresql"
        else "json_array_length(decoded_scores)"
    )
    sql = (
        f"SELECT count(*), "
        f"sum(CASE WHEN abstained THEN 1 ELSE 0 END), "
        f"avg(CASE WHEN NOT abstained THEN {length} END), "
        f"sum(CASE WHEN NOT abstained AND {length} = 1 THEN 1 ELSE 0 END) "
        f"FROM {table} WHERE run_id = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [run.pk])
        row = cursor.fetchone()
    scores, abstained, mean_subset, singletons = row if row else (0, 0, None, 0)
    return {
        "scores": int(scores or 0),
        "abstained": int(abstained or 0),
        "mean_subset_size": float(mean_subset) if mean_subset is not None else None,
        "singletons": int(singletons or 0),
    }


def _distribution(run: Run, scale_size: int) -> dict[str, int]:
    """Scores per decoded stage (a subset counts once per selected stage): one statement."""
    table = Score._meta.db_table
    if connection.vendor == "postgresql":
        sql = (
            f"SELECT v.stage::int, count(*) FROM {table} s "
            f"CROSS JOIN LATERAL jsonb_array_elements_text(s.decoded_scores) AS v(stage) "
            f"WHERE s.run_id = %s GROUP BY 1"
        )
    else:
        sql = (
            f"SELECT CAST(v.value AS INTEGER), count(*) FROM {table} s, "
            f"json_each(s.decoded_scores) AS v WHERE s.run_id = %s GROUP BY 1"
        )
    counts = {str(stage): 0 for stage in range(1, scale_size + 1)}
    with connection.cursor() as cursor:
        cursor.execute(sql, [run.pk])
        for stage, n in cursor.fetchall():
            counts[str(int(stage))] = counts.get(str(int(stage)), 0) + int(n)
    return dict(sorted(counts.items(), key=lambda item: int(item[0])))


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _stage_requests(run: Run) -> dict[str, dict[str, Any]]:
    """Attempts, retries, failures, tokens and cost per stage: one GROUP BY on the
    ``(process, stage, status)`` index."""
    rows = (
        LlmRequest.objects.filter(process=run.process)
        .values("stage")
        .annotate(
            attempts=Count("id"),
            retries=Count("id", filter=Q(attempt_index__gt=1)),
            failed_attempts=Count("id", filter=Q(status="failed")),
            parse_failures=Count("id", filter=Q(status="failed", error_class="parse")),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost_usd=Sum("cost_usd"),
        )
        .order_by("stage")
    )
    found: dict[str, dict[str, Any]] = {str(r["stage"]): dict(r) for r in rows}
    out: dict[str, dict[str, Any]] = {}
    for stage in [*STAGE_ORDER, *sorted(set(found) - set(STAGE_ORDER))]:
        r = found.get(stage, {})
        attempts = int(r.get("attempts") or 0)
        parse_failures = int(r.get("parse_failures") or 0)
        out[stage] = {
            "attempts": attempts,
            "retries": int(r.get("retries") or 0),
            "failed_attempts": int(r.get("failed_attempts") or 0),
            "parse_failures": parse_failures,
            "parse_failure_rate": _ratio(parse_failures, attempts),
            "input_tokens": int(r.get("input_tokens") or 0),
            "output_tokens": int(r.get("output_tokens") or 0),
            "cost_usd": float(r.get("cost_usd") or 0.0),
            "duration_s": None,
        }
    return out


def _routes(run: Run) -> dict[str, dict[str, Any]]:
    """Requests, tokens and cost by route; ``unrouted`` = never handed to a transport."""
    rows = (
        LlmRequest.objects.filter(process=run.process)
        .values("route")
        .annotate(
            requests=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost_usd=Sum("cost_usd"),
        )
        .order_by("route")
    )
    out: dict[str, dict[str, Any]] = {
        route: {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        for route in _ROUTES
    }
    for r in rows:
        name = str(r["route"] or "unrouted")
        out[name] = {
            "requests": int(r["requests"] or 0),
            "input_tokens": int(r["input_tokens"] or 0),
            "output_tokens": int(r["output_tokens"] or 0),
            "cost_usd": float(r["cost_usd"] or 0.0),
        }
    return out


def _durations(run: Run) -> dict[str, float | None]:
    """Seconds per stage from the first ``run_started``/``stage_advanced``/``run_completed``
    event of each stage (one GROUP BY on the ``(process, event_type)`` index)."""
    rows = (
        RunEvent.objects.filter(
            process=run.process,
            event_type__in=["run_started", "stage_advanced", "run_completed"],
        )
        .values("event_type", "stage")
        .annotate(first=Min("created_at"))
    )
    starts: dict[str, datetime] = {}
    completed: dict[str, datetime] = {}
    for r in rows:
        stage, at = str(r["stage"]), r["first"]
        if r["event_type"] == "run_completed":
            completed[stage] = at
        elif r["event_type"] == "run_started" and stage == STAGE_ORDER[0]:
            starts.setdefault(stage, at)
        elif r["event_type"] == "stage_advanced":
            starts[stage] = at  # entering ``stage``; beats run_started if both exist
    out: dict[str, float | None] = {}
    for index, stage in enumerate(STAGE_ORDER):
        start = starts.get(stage)
        nxt = STAGE_ORDER[index + 1] if index + 1 < len(STAGE_ORDER) else None
        end = starts.get(nxt) if nxt is not None else None
        end = end or completed.get(stage)
        out[stage] = (end - start).total_seconds() if start and end else None
    return out


def run_summary(*, run: Run) -> dict[str, Any]:
    """A JSON-ready summary of ``run`` (see the module docstring for every definition)."""
    spec = parse_spec(run.run_config.config_body)
    targets = ScoreTarget.objects.filter(run_id=run.pk).count()
    stats = _score_stats(run)
    scored_non_abstained = stats["scores"] - stats["abstained"]
    critics = {
        "mean_expert_agreement": ScoreCritic.objects.filter(run_id=run.pk).aggregate(
            v=Avg("expert_agreement_prob")
        )["v"],
        **{
            f"mean_rubric_{k}": v
            for k, v in RubricCritic.objects.filter(run_id=run.pk)
            .aggregate(
                observability=Avg("observability_score"),
                discriminability=Avg("discriminability_score"),
            )
            .items()
        },
    }
    stages = _stage_requests(run)
    for stage, seconds in _durations(run).items():
        stages[stage]["duration_s"] = seconds
    totals = {
        key: sum(s[key] for s in stages.values())
        for key in ("attempts", "retries", "failed_attempts", "parse_failures", "input_tokens")
    }
    totals["output_tokens"] = sum(s["output_tokens"] for s in stages.values())
    totals["cost_usd"] = sum(s["cost_usd"] for s in stages.values())
    totals["parse_failure_rate"] = _ratio(totals["parse_failures"], totals["attempts"])
    return {
        "run_id": run.pk,
        "experiment": run.experiment.tag,
        "status": run.status,
        "spec_signature": run.run_config.spec_signature,
        "samples": run.sample_count,
        "targets": targets,
        "scored": stats["scores"],
        "failed_targets": max(targets - stats["scores"], 0),
        "verdicts": {
            "scale_size": spec.rubric.scale_size,
            "method": spec.scoring.method,
            "distribution": _distribution(run, spec.rubric.scale_size),
            "abstained": stats["abstained"],
            "abstain_rate": _ratio(stats["abstained"], stats["scores"]),
            "mean_subset_size": stats["mean_subset_size"],
            "singleton_rate": _ratio(stats["singletons"], scored_non_abstained),
        },
        "critics": critics,
        "stages": stages,
        "totals": totals,
        "routes": _routes(run),
    }


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def render_summary(summary: dict[str, Any]) -> str:
    """The summary for people: a header, the verdict geometry, then one line per stage."""
    v = summary["verdicts"]
    c = summary["critics"]
    t = summary["totals"]
    dist = " ".join(f"{stage}:{n}" for stage, n in v["distribution"].items())
    routes = " ".join(
        f"{name}={r['requests']}" for name, r in summary["routes"].items() if r["requests"]
    )
    lines = [
        f"run {summary['run_id']} ({summary['experiment']})  status={summary['status']}  "
        f"spec={summary['spec_signature'][:12]}",
        f"  targets={summary['targets']} scored={summary['scored']} "
        f"failed={summary['failed_targets']}",
        f"  verdicts [{v['method']}, scale {v['scale_size']}]  {dist}",
        f"  abstain_rate={_fmt(v['abstain_rate'])} mean_subset_size="
        f"{_fmt(v['mean_subset_size'], '.2f')} singleton_rate={_fmt(v['singleton_rate'])}",
        f"  critics: expert_agreement={_fmt(c['mean_expert_agreement'])} "
        f"rubric observability={_fmt(c['mean_rubric_observability'])} "
        f"discriminability={_fmt(c['mean_rubric_discriminability'])}",
    ]
    for stage, s in summary["stages"].items():
        duration = "-" if s["duration_s"] is None else f"{s['duration_s']:.0f}s"
        lines.append(
            f"  {stage:<14} attempts={s['attempts']:<7} retries={s['retries']:<5} "
            f"parse_fail={_fmt(s['parse_failure_rate'])} "
            f"tokens={s['input_tokens']}/{s['output_tokens']} "
            f"cost=${s['cost_usd']:.4f} duration={duration}"
        )
    lines.append(
        f"  total cost=${t['cost_usd']:.4f} tokens in/out={t['input_tokens']}/"
        f"{t['output_tokens']} attempts={t['attempts']} retries={t['retries']}"
        + (f"  routes: {routes}" if routes else "")
    )
    return "\n".join(lines)


__all__ = ["render_summary", "run_summary"]
