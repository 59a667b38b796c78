"""A 1,000-evidence window through collect -> l1 -> l2 -> l3: seconds per stage.

Usage (PostgreSQL and Redis on loopback; recreates the database ``jg_evidence_bench``)::

    uv run python bench/bench_window.py --evidence 1000

What runs for real: the collect step (filtering, sandbox, bulk insert), ``window_advance``
(materialization of every stage's prompts and requests), the transport (routing, batch
sharding, upload, poll, download, apply) through the official OpenAI SDK against an in-thread
*instant* simulator (``batch_duration_s=0``, the default sim responder), the evidence result
handler (checks, prefix stripping, conditional bulk UPDATE), and the tick loop, with Celery
in eager mode (tasks run inline in this process) on PostgreSQL.

What is replaced: only the provider search call. Firecrawl returns at most 100 results per
query, so the search adapter is swapped for the deterministic corpus (``demo_corpus``) with
``--evidence`` articles; everything after the search is the production path. The first poll
of a batch waits one second (``poll_delay``: ``min(poll_interval, 2**polls)``), which is
included in each stage's time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "jg_evidence_bench"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/11")
os.environ.setdefault("JUDGE_REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("JUDGE_LOG_LEVEL", "WARNING")
os.environ.setdefault("JUDGE_LOG_FORMAT", "text")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "judge_project.settings")


def _recreate_db() -> None:
    from bench._db import recreate_database

    recreate_database(DB_NAME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evidence", type=int, default=1000)
    parser.add_argument("--model", default="gpt-4.1-mini")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    _recreate_db()
    import django

    django.setup()
    import logging

    logging.getLogger("celery").setLevel(logging.WARNING)

    from django.core.management import call_command
    from django.test.utils import override_settings

    call_command("migrate", verbosity=0)

    from evidence.demo_corpus import articles
    from evidence.models import Evidence, Window, WindowRun
    from evidence.search.base import SearchHit
    from evidence.selectors import window_progress
    from evidence.services import windows as windows_service
    from judge_project.celery import app as celery_app
    from orchestration.models import LlmBatch, LlmRequest, RunEvent
    from orchestration.simulator.config import SimulatorConfig
    from orchestration.simulator.server import run_in_thread
    from orchestration.transport.providers import reset_clients
    from orchestration.transport.services.tick import tick_run

    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    sim = run_in_thread(SimulatorConfig(seed=1, batch_duration_s=0.0))
    reset_clients()

    def corpus_search(run: WindowRun, sandbox: object) -> list[SearchHit]:
        window = run.window
        return [
            SearchHit(url=a.url, title=a.title, markdown=a.markdown, published=a.published)
            for a in articles(
                query=window.query,
                country=window.country,
                start=str(window.start_date),
                end=str(window.end_date),
                limit=window.evidence_limit,
            )
        ]

    windows_service._search = corpus_search  # type: ignore[assignment]
    try:
        with override_settings(JUDGE_SIMULATOR_URL=sim.url, FIRECRAWL_API_URL=None):
            # window_create caps evidence_limit at Firecrawl's 100; the bench wants more.
            windows_service.window_create(
                tag="bench",
                query="fascism",
                country="Hungary",
                start_date="2026-01-01",
                end_date="2026-01-31",
                model=args.model,
            )
            Window.objects.filter(tag="bench").update(evidence_limit=args.evidence)
            started = time.monotonic()
            run = windows_service.window_collect(tag="bench")
            deadline = started + args.timeout
            while True:
                tick_run()
                run.refresh_from_db()
                if run.status in ("completed", "failed", "canceled"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out: {window_progress(run=run).to_json()}")
                time.sleep(0.01)
            total = time.monotonic() - started
    finally:
        sim.stop()

    progress = window_progress(run=run)
    events = list(
        RunEvent.objects.filter(process=run.process)
        .order_by("created_at", "pk")
        .values_list("event_type", "stage", "created_at", "payload")
    )
    origin = run.created_at
    collect_s = next(
        (at - origin).total_seconds() for kind, _, at, _ in events if kind == "collect_completed"
    )
    # A stage runs from the start of its materialization (its stage_advanced event, minus the
    # materialization time it records) to the next stage_advanced or the completion event.
    marks = [
        (stage, (at - origin).total_seconds() - float(payload.get("materialize_s", 0.0)),
         float(payload.get("materialize_s", 0.0)))
        for kind, stage, at, payload in events
        if kind == "stage_advanced"
    ]  # fmt: skip
    finished = next(
        (at - origin).total_seconds() for kind, _, at, _ in events if kind == "window_run_completed"
    )
    print(f"status: {run.status}  evidence: {progress.evidence_count}  total: {total:.2f}s")
    print(f"  collect (corpus search + filter + insert): {collect_s:.2f}s")
    ends = [m[1] for m in marks[1:]] + [finished]
    for (stage, begin, materialize), end in zip(marks, ends, strict=True):
        sp = progress.stage(stage)
        reqs = LlmRequest.objects.filter(process=run.process, stage=stage)
        batches = LlmBatch.objects.filter(requests__in=reqs).distinct().count()
        print(
            f"  {stage:<15} {end - begin:6.2f}s  (materialize {materialize:.2f}s)  "
            f"completed={sp.completed} failed={sp.failed} requests={reqs.count()} "
            f"batches={batches}  {sp.completed / max(end - begin, 1e-9):.0f} evidence/s"
        )
    assert Evidence.objects.filter(window_run=run, l3_abstracted__isnull=False).count() == (
        progress.stage("l3_abstracted").completed
    )


if __name__ == "__main__":
    main()
