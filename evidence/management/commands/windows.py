"""``manage.py windows``: create, collect, status, watch, pause, resume, cancel, pool, plan, list.

Thin: parse arguments, call one service or selector, print. Errors are ``ServiceError``s
(stable code, message, fix) turned into a ``CommandError`` with exit code 4.

``status --json`` / ``watch --json`` print ``WindowProgress.to_json()`` (one object per poll
for watch). ``watch`` exits 0 when the window run completed, 1 when it failed, 2 when it was
canceled, 3 when paused (only with ``--until-paused``), 4 on a usage or lookup error, 5 on
``--timeout`` or SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evidence.bundling import STRATEGIES, VIEWS
from evidence.models import Window, WindowRun
from evidence.selectors import WindowProgress, window_progress
from evidence.services.plans import bundle_plan_create
from evidence.services.pools import windows_pool_create
from evidence.services.windows import (
    window_collect,
    window_create,
    window_run_cancel,
    window_run_pause,
    window_run_resolve,
    window_run_resume,
    window_run_summary,
)
from orchestration.services.errors import ServiceError

EXIT_CODES = {"completed": 0, "failed": 1, "canceled": 2, "paused": 3}
EXIT_USAGE = 4
EXIT_TIMEOUT = 5


def _bar(done: int, total: int, width: int = 24) -> str:
    if total <= 0:
        return "[" + " " * width + "]"
    filled = int(width * min(done, total) / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render_progress(p: WindowProgress) -> str:
    """A compact human view of a window run's progress."""
    lines = [
        f"window run {p.window_run_id} ({p.window})  status={p.status}  stage={p.current_stage}"
        f"  target={p.target_stage}",
        f"  search: {p.search_count} hits, {p.evidence_count} evidence, "
        f"{p.dropped_count} dropped, {p.truncated_count} truncated"
        f"  ({p.query!r} / {p.country} / {p.start_date}..{p.end_date} / {p.model})",
    ]
    for s in p.stages:
        done = s.completed + s.failed
        lines.append(
            f"  {s.stage:<15}{_bar(done, s.total)} {s.completed:>6}/{s.total:<6} "
            f"failed={s.failed:<4} pending={s.pending:<5} skipped={s.skipped:<4} "
            f"retries={s.retries:<4} {s.status}"
        )
    if p.last_error:
        lines.append(f"  last_error: {p.last_error}")
    return "\n".join(lines)


def _csv(raw: str | None) -> list[str]:
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


class Command(BaseCommand):
    help = "Create, collect and operate evidence windows; freeze pools; build bundle plans."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="define a search window")
        create.add_argument("tag")
        create.add_argument("--query", required=True)
        create.add_argument("--country", required=True)
        create.add_argument("--start", required=True, help="YYYY-MM-DD")
        create.add_argument("--end", required=True, help="YYYY-MM-DD (>= start)")
        create.add_argument("--model", default="gpt-4.1-mini")
        create.add_argument("--limit", type=int, default=20, help="evidence limit (1..100)")
        create.add_argument("--target-stage", default="l3_abstracted", choices=VIEWS)
        create.add_argument(
            "--allow-domains", help="comma-separated host allowlist (default: any public host)"
        )
        create.add_argument("--search-timeout", type=float, help="seconds per search request")

        collect = sub.add_parser("collect", help="collect a window (idempotent)")
        collect.add_argument("tag")
        collect.add_argument("--json", action="store_true")

        for name in ("status", "watch"):
            p = sub.add_parser(name, help=f"{name} a window run (window tag or run id)")
            p.add_argument("ref")
            p.add_argument("--json", action="store_true")
            if name == "watch":
                p.add_argument("--interval", type=float, default=2.0)
                p.add_argument("--timeout", type=float, default=0.0, help="0 = no timeout")
                p.add_argument("--until-paused", action="store_true")
        for name in ("pause", "resume", "cancel"):
            sub.add_parser(name, help=f"{name} a window run").add_argument("ref")

        pool = sub.add_parser("pool", help="freeze windows' evidence into a pool")
        pool.add_argument("pool_tag")
        pool.add_argument("--windows", required=True, help="comma-separated window tags")
        pool.add_argument("--stage", default="l3_abstracted", choices=VIEWS)

        plan = sub.add_parser("plan", help="create (or reuse) a bundle plan over a pool")
        plan.add_argument("tag")
        plan.add_argument("--pool", required=True)
        plan.add_argument("--strategy", required=True, choices=STRATEGIES)
        plan.add_argument("--version", default="v1")
        plan.add_argument("--source-view", choices=VIEWS)
        plan.add_argument("--bundle-size", type=int, required=True)
        plan.add_argument("--seed", type=int)
        plan.add_argument("--json", action="store_true")

        sub.add_parser("list", help="list windows and their latest run")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except ServiceError as exc:
            raise CommandError(f"[{exc.code}] {exc}", returncode=EXIT_USAGE) from exc

    # --- actions ---------------------------------------------------------------------------

    def _create(self, o: dict[str, Any]) -> None:
        window = window_create(
            tag=o["tag"],
            query=o["query"],
            country=o["country"],
            start_date=o["start"],
            end_date=o["end"],
            model=o["model"],
            evidence_limit=o["limit"],
            target_stage=o["target_stage"],
            allowed_domains=_csv(o["allow_domains"]) or None,
            search_timeout_s=o["search_timeout"],
        )
        self.stdout.write(
            f"created window {window.tag} ({window.query!r} / {window.country} / "
            f"{window.start_date}..{window.end_date}, limit {window.evidence_limit}, "
            f"target {window.target_stage})"
        )

    def _collect(self, o: dict[str, Any]) -> None:
        run = window_collect(tag=o["tag"])
        summary = window_run_summary(run)
        if o["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self.stdout.write(
                f"window run {run.pk} ({run.window.tag}) {run.status} at {run.current_stage}"
                f" -> {run.target_stage}"
            )

    def _status(self, o: dict[str, Any]) -> None:
        progress = window_progress(run=window_run_resolve(ref=o["ref"]))
        if o["json"]:
            self.stdout.write(json.dumps(progress.to_json()))
        else:
            self.stdout.write(render_progress(progress))

    def _watch(self, o: dict[str, Any]) -> None:
        run = window_run_resolve(ref=o["ref"])
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
        started = time.monotonic()
        tty = self.stdout.isatty() and not o["json"]
        while True:
            run.refresh_from_db()
            progress = window_progress(run=run)
            if o["json"]:
                self.stdout.write(json.dumps(progress.to_json()))
                self.stdout.flush()
            else:
                text = render_progress(progress)
                self.stdout.write(("\x1b[2J\x1b[H" + text) if tty else text)
            if progress.terminal or (o["until_paused"] and run.status == "paused"):
                sys.exit(EXIT_CODES[run.status])
            if stop["now"] or (o["timeout"] and time.monotonic() - started > o["timeout"]):
                sys.exit(EXIT_TIMEOUT)
            time.sleep(max(o["interval"], 0.05))

    def _pause(self, o: dict[str, Any]) -> None:
        run = window_run_pause(window_run_id=window_run_resolve(ref=o["ref"]).pk)
        self.stdout.write(f"window run {run.pk} {run.status}")

    def _resume(self, o: dict[str, Any]) -> None:
        run = window_run_resume(window_run_id=window_run_resolve(ref=o["ref"]).pk)
        self.stdout.write(f"window run {run.pk} {run.status}")

    def _cancel(self, o: dict[str, Any]) -> None:
        run = window_run_cancel(window_run_id=window_run_resolve(ref=o["ref"]).pk)
        self.stdout.write(f"window run {run.pk} {run.status}")

    def _pool(self, o: dict[str, Any]) -> None:
        pool = windows_pool_create(
            pool_tag=o["pool_tag"], window_tags=_csv(o["windows"]), stage=o["stage"]
        )
        self.stdout.write(
            f"created pool {pool.tag} with {pool.evidence_count} evidence at {o['stage']}"
        )

    def _plan(self, o: dict[str, Any]) -> None:
        result = bundle_plan_create(
            tag=o["tag"],
            pool_tag=o["pool"],
            strategy=o["strategy"],
            version=o["version"],
            source_view=o["source_view"],
            bundle_size=o["bundle_size"],
            seed=o["seed"],
        )
        if o["json"]:
            self.stdout.write(json.dumps(result.to_dict()))
            return
        plan = result.plan
        verb = "created" if result.created else "reused"
        shape = (
            "bundles built per sample at run start"
            if plan.strategy == "window_round_robin"
            else f"{plan.bundle_count} bundles"
        )
        self.stdout.write(
            f"{verb} bundle plan {plan.tag} over pool {plan.pool.tag}: {plan.strategy} "
            f"size {plan.bundle_size}, {plan.evidence_count} evidence, {shape}"
        )

    def _list(self, o: dict[str, Any]) -> None:
        for window in Window.objects.order_by("tag"):
            latest = WindowRun.objects.filter(window=window).order_by("-pk").first()
            state = f"run {latest.pk} {latest.status}/{latest.current_stage}" if latest else "-"
            self.stdout.write(
                f"{window.tag:<32} {window.country:<12} {window.start_date}..{window.end_date} "
                f"{state}"
            )
