"""W5: the full judge pipeline (4 stages), 100 samples x 500 evidence, instant simulator.

Usage::

    uv run python bench/bench_pipeline.py --samples 100 --evidence 500 [--max-batch-size 2500]

Real worker (2 processes), beat and simulator processes on PostgreSQL + Redis. Reports the
start (materialization) time, seconds per stage, and the stage-advance latency: from the last
result of a stage being applied to the next stage's requests being materialized (from the
ledger and attempt timestamps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "jg_bench_pipeline"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/8")
os.environ.setdefault("JUDGE_REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ.setdefault("JUDGE_LOG_LEVEL", "WARNING")
os.environ.setdefault("JUDGE_LOG_FORMAT", "text")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "judge_project.settings")


def _recreate_db() -> None:
    from bench._db import recreate_database

    recreate_database(DB_NAME)


_recreate_db()
import django

django.setup()

import redis
from django.conf import settings
from django.core.management import call_command
from django.db.models import Max

from configs_app.services import template_create
from evidence.services.pools import demo_pool_load
from orchestration.models import LlmRequest, Run, RunEvent
from orchestration.processes import Processes, free_port
from orchestration.services.runs import experiment_create, experiment_start
from policies.models import Policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--evidence", type=int, default=500)
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    if args.max_batch_size:
        Policy.objects.filter(scope="global").update(max_batch_size=args.max_batch_size)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    redis.Redis.from_url(str(settings.JUDGE_REDIS_URL)).flushdb()
    windows = 5
    demo_pool_load(tag="w5-pool", windows=windows, per_window=args.evidence // windows)
    body = {
        "rubric": {"model": "gpt-4.1-mini", "scale_size": 4, "concept": "fascism"},
        "scoring": {
            "model": "gpt-4.1-mini",
            "method": "subset",
            "abstain_enabled": True,
            "evidence_view": "l0_raw",
            "randomizations": ["anonymize_stages", "hide_label_text", "shuffle_rubric_order"],
            "evidence_bundle_size": 1,
            "bundle_strategy": "window_round_robin",
        },
        "sample_count": args.samples,
        "evidence": {"pool_tag": "w5-pool"},
    }
    template = template_create(template_id="w5", body=body)
    experiment_create(template_ref=f"w5@{template.version}", tag="w5")
    tmp = Path(tempfile.mkdtemp(prefix="w5-", dir=ROOT / "var"))
    port = free_port()
    env = {**os.environ, "JUDGE_SIMULATOR_URL": f"http://127.0.0.1:{port}",
           "JUDGE_TICK_SECONDS": "1"}  # fmt: skip
    procs = Processes(env=env, log_dir=tmp / "logs")
    try:
        _, url = procs.simulator(port=port, data_dir=tmp / "sim")
        settings.JUDGE_SIMULATOR_URL = url
        procs.worker(concurrency=2)
        procs.beat()
        t0 = time.perf_counter()
        run = experiment_start(tag="w5")
        start_s = time.perf_counter() - t0
        while True:
            run.refresh_from_db()
            if run.status in ("completed", "failed", "canceled"):
                break
            for c in procs.children:
                if not c.alive():
                    raise RuntimeError(f"{c.name} died:\n{c.tail()}")
            if time.perf_counter() - t0 > args.timeout:
                raise RuntimeError("timeout")
            time.sleep(0.5)
        total_s = time.perf_counter() - t0
    finally:
        procs.stop_all()
    report: dict[str, object] = {
        "samples": args.samples,
        "evidence": args.evidence,
        "targets": run.target_count,
        "status": run.status,
        "start_s": round(start_s, 2),
        "total_s": round(total_s, 1),
        "stages": {},
    }
    events = list(RunEvent.objects.filter(process=run.process).order_by("id"))
    materialized = {e.stage: e.created_at for e in events if e.event_type == "stage_materialized"}
    stages = ["rubric_gen", "rubric_critic", "score_gen", "score_critic"]
    for i, stage in enumerate(stages):
        last = LlmRequest.objects.filter(process=run.process, stage=stage).aggregate(
            m=Max("completed_at")
        )["m"]
        began = materialized.get(stage)
        info: dict[str, object] = {
            "requests": LlmRequest.objects.filter(process=run.process, stage=stage).count(),
            "seconds": round((last - began).total_seconds(), 2) if last and began else None,
        }
        if i + 1 < len(stages) and last and stages[i + 1] in materialized:
            info["advance_latency_s"] = round(
                (materialized[stages[i + 1]] - last).total_seconds(), 2
            )
        report["stages"][stages[i]] = info  # type: ignore[index]
    print(json.dumps(report, indent=2))
    (ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)
    (ROOT / "var" / "bench" / "bench_pipeline.json").write_text(json.dumps(report, indent=2))
    _ = Run


if __name__ == "__main__":
    main()
