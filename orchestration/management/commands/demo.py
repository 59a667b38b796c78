"""``manage.py demo``: the README's first command, end to end on whatever settings are active.

On the embedded default (SQLite, kombu's filesystem transport, no services) it:
1. migrates and imports ``examples/configs/demo.yaml``;
2. starts the real processes: the provider simulator, a Celery worker and Celery beat;
3. collects two evidence windows through the evidence pipeline (simulated Firecrawl search of
   the synthetic news corpus, then clean -> neutralize -> abstract through the transport) and
   freezes the 20 abstracted articles as the config's pool (reused on later demo runs);
4. creates and starts an experiment (10 samples x 20 evidence), watches it to the end;
5. prints a summary (verdicts, abstain and parse-failure rates, tokens, cost at batch prices,
   the run config's spec_signature) and exports the dataset;
6. stops everything it started (also on Ctrl-C).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from configs_app.services import template_import
from evidence.models import Pool
from evidence.selectors import window_progress
from evidence.services.pools import windows_pool_create
from evidence.services.windows import demo_windows_collect
from orchestration.management.commands.experiments import render_progress
from orchestration.processes import free_port, processes
from orchestration.selectors import run_progress
from orchestration.services.control import run_cancel
from orchestration.services.runs import experiment_create, experiment_start

BASE_DIR = Path(__file__).resolve().parents[3]


class Command(BaseCommand):
    help = "Run the demo experiment end to end with real worker, beat and simulator processes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", default=str(BASE_DIR / "examples/configs/demo.yaml"))
        parser.add_argument("--windows", type=int, default=2)
        parser.add_argument("--per-window", type=int, default=10)
        parser.add_argument("--batch-duration", type=float, default=1.0)
        parser.add_argument("--timeout", type=float, default=600.0)
        parser.add_argument("--format", choices=["parquet", "csv", "jsonl"], default="parquet")
        parser.add_argument("--interval", type=float, default=2.0)

    def handle(self, *args: Any, **o: Any) -> None:
        var_dir = Path(settings.VAR_DIR)
        var_dir.mkdir(parents=True, exist_ok=True)
        self.stdout.write("== judge-gym demo ==")
        self.stdout.write(
            f"database: {str(settings.DATABASES['default']['ENGINE']).rsplit('.', 1)[-1]}, "
            f"broker: {settings.CELERY_BROKER_URL.split('://', 1)[0]}"
        )
        call_command("migrate", verbosity=0)
        imported = template_import(path=o["config"], created_by="demo")
        template = imported.template
        self.stdout.write(
            f"config {template.template_id}@v{template.version} "
            f"({'imported' if imported.created else 'unchanged'}), "
            f"signature {template.spec_signature[:16]}"
        )
        pool_tag = str(template.config_body["evidence"]["pool_tag"])

        port = free_port()
        sim_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "JUDGE_SIMULATOR_URL": sim_url,
            "JUDGE_TICK_SECONDS": os.environ.get("JUDGE_TICK_SECONDS", "1"),
            "JUDGE_LOG_FORMAT": "text",
        }
        settings.JUDGE_SIMULATOR_URL = sim_url  # preflight in this process
        log_dir = var_dir / "demo-logs"
        with processes(env, log_dir) as procs:
            procs.simulator(port=port, batch_duration=o["batch_duration"], data_dir=var_dir / "sim")
            procs.worker(concurrency=2)
            procs.beat()
            self.stdout.write(f"started simulator ({sim_url}), worker, beat; logs in {log_dir}")
            pool = self._evidence(pool_tag, o, procs)
            self.stdout.write(f"pool {pool.tag}: {pool.evidence_count} evidence\n")
            tag = f"demo-{int(time.time())}"
            experiment_create(template_ref=f"{template.template_id}@{template.version}", tag=tag)
            run = experiment_start(tag=tag)
            self.stdout.write(f"experiment {tag}: run {run.pk} started\n")
            started = time.monotonic()
            try:
                while True:
                    run.refresh_from_db()
                    self.stdout.write(render_progress(run_progress(run=run)) + "\n")
                    if run.status in ("completed", "failed", "canceled"):
                        break
                    for child in procs.children:
                        if not child.alive():
                            raise CommandError(f"{child.name} died:\n{child.tail()}")
                    if time.monotonic() - started > o["timeout"]:
                        run_cancel(run_id=run.pk, reason="demo timeout")
                        raise CommandError(f"demo did not finish within {o['timeout']} s")
                    time.sleep(o["interval"])
            except KeyboardInterrupt:
                run_cancel(run_id=run.pk, reason="demo interrupted")
                raise
        elapsed = time.monotonic() - started
        self._report(run.pk, o["format"], elapsed)

    def _evidence(self, pool_tag: str, o: dict[str, Any], procs: Any) -> Pool:
        """Collect the demo windows through the real pipeline and freeze them as the pool."""
        existing = Pool.objects.filter(tag=pool_tag).first()
        if existing is not None:
            return existing
        runs = demo_windows_collect(
            tag_prefix=pool_tag, windows=o["windows"], per_window=o["per_window"]
        )
        self.stdout.write(f"collecting {len(runs)} evidence windows (search -> l1 -> l2 -> l3)")
        deadline = time.monotonic() + o["timeout"]
        while True:
            states = []
            for wr in runs:
                wr.refresh_from_db()
                p = window_progress(run=wr)
                done = sum(s.completed for s in p.stages)
                total = sum(s.total for s in p.stages)
                states.append(f"{wr.window.tag}: {wr.status}/{wr.current_stage} {done}/{total}")
            self.stdout.write("  " + "; ".join(states))
            if all(wr.status in ("completed", "failed", "canceled") for wr in runs):
                break
            for child in procs.children:
                if not child.alive():
                    raise CommandError(f"{child.name} died:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise CommandError("evidence collection did not finish in time")
            time.sleep(o["interval"])
        failed = [wr for wr in runs if wr.status != "completed"]
        if failed:
            raise CommandError(
                "window run(s) did not complete: "
                + ", ".join(f"{wr.window.tag} {wr.status}: {wr.last_error}" for wr in failed)
            )
        return windows_pool_create(
            pool_tag=pool_tag, window_tags=[wr.window.tag for wr in runs], stage="l3_abstracted"
        )

    def _report(self, run_id: int, fmt: str, elapsed: float) -> None:
        from orchestration.export import run_export
        from orchestration.models import Run
        from orchestration.summary import render_summary, run_summary

        run = Run.objects.select_related("experiment", "run_config").get(pk=run_id)
        self.stdout.write(f"run {run.pk} {run.status} in {elapsed:.1f} s\n")
        self.stdout.write(render_summary(run_summary(run=run)))
        if run.status != "completed":
            raise CommandError(f"run ended {run.status}: {run.last_error}")
        out = Path(settings.VAR_DIR) / "exports" / f"{run.experiment.tag}-run{run.pk}.{fmt}"
        result = run_export(run=run, fmt=fmt, path=out)
        self.stdout.write(f"\nexported {result.rows} rows to {result.path}")
        self.stdout.write(f"manifest: {result.manifest_path}")
