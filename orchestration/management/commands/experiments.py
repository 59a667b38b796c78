"""``manage.py experiments``: create, start, status, watch, pause, resume, cancel, list, export.

Thin: parse arguments, call one service or selector, print. Errors are ServiceErrors with a
stable code, a message and a fix, printed to stderr with a non-zero exit.

``watch --json`` prints one JSON object per poll (the shape of ``RunProgress.to_json``,
documented in docs/ARCHITECTURE.md "Watch JSON"); the exit code is 0 for completed, 1 for
failed, 2 for canceled, 3 for paused (when ``--until-paused`` is not given it keeps watching),
and 4 for a usage or lookup error.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.selectors import RunProgress, run_progress
from orchestration.services.control import run_cancel, run_pause, run_resolve, run_resume
from orchestration.services.errors import ServiceError
from orchestration.services.runs import experiment_create, experiments_start

EXIT_CODES = {"completed": 0, "failed": 1, "canceled": 2, "paused": 3}
STAGES = ["rubric_gen", "rubric_critic", "score_gen", "score_critic"]


def _bar(done: int, total: int, width: int = 24) -> str:
    if total <= 0:
        return "[" + " " * width + "]"
    filled = int(width * min(done, total) / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render_progress(p: RunProgress) -> str:
    """A compact human view of a run's progress."""
    lines = [
        f"run {p.run_id} ({p.experiment})  status={p.status}  stage={p.current_stage}"
        + (f"  pause_after={p.pause_after}" if p.pause_after else "")
        + f"  batches_in_flight={p.batches_in_flight}"
        + (f"  eta={p.eta_seconds:.0f}s" if p.eta_seconds is not None else "")
    ]
    for s in p.stages:
        done = s.completed + s.failed
        lines.append(
            f"  {s.stage:<14}{_bar(done, s.total)} {s.completed:>7}/{s.total:<7} "
            f"failed={s.failed:<5} pending={s.pending:<6} retries={s.retries:<5} {s.status}"
        )
    if p.last_error:
        lines.append(f"  last_error: {p.last_error}")
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Create, start and operate experiment runs."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create an experiment from a config template")
        create.add_argument("--template", required=True, help="template_id[@version]")
        create.add_argument("--tag", help="experiment tag (generated when omitted)")
        create.add_argument("--pool", help="pool tag (default: the spec's evidence.pool_tag)")
        create.add_argument("--team", help="team slug")
        create.add_argument("--bundle-plan", help="bundle plan tag")

        start = sub.add_parser("start", help="start one or more experiments")
        start.add_argument("tag", nargs="?")
        start.add_argument("--tags", help="comma-separated tags")
        start.add_argument("--pause-after", choices=STAGES)
        start.add_argument("--json", action="store_true")

        for name in ("status", "watch"):
            p = sub.add_parser(name, help=f"{name} a run (by run id or experiment tag)")
            p.add_argument("ref")
            p.add_argument("--json", action="store_true")
            if name == "watch":
                p.add_argument("--interval", type=float, default=2.0)
                p.add_argument("--timeout", type=float, default=0.0, help="0 = no timeout")
                p.add_argument("--until-paused", action="store_true", help="also exit when paused")
        pause = sub.add_parser("pause")
        pause.add_argument("ref")
        resume = sub.add_parser("resume")
        resume.add_argument("ref")
        resume.add_argument("--pause-after", choices=STAGES)
        resume.add_argument("--clear-pause-after", action="store_true")
        cancel = sub.add_parser("cancel")
        cancel.add_argument("ref")
        sub.add_parser("list", help="list experiments and their latest run")
        export = sub.add_parser("export", help="export a run: one row per score target")
        export.add_argument("ref")
        export.add_argument("--format", choices=["parquet", "csv", "jsonl"], default="parquet")
        export.add_argument("--out", help="output path (default var/exports/<tag>-run<id>.<ext>)")
        export.add_argument("--allow-incomplete", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            getattr(self, f"_{action}")(options)
        except ServiceError as exc:
            raise CommandError(f"[{exc.code}] {exc}", returncode=4) from exc

    # --- actions ---------------------------------------------------------------------------

    def _create(self, o: dict[str, Any]) -> None:
        exp = experiment_create(
            template_ref=o["template"],
            pool_tag=o["pool"],
            tag=o["tag"],
            team_slug=o["team"],
            bundle_plan_tag=o["bundle_plan"],
        )
        self.stdout.write(f"created experiment {exp.tag} (template {exp.template})")

    def _start(self, o: dict[str, Any]) -> None:
        tags = [t.strip() for t in (o["tags"] or "").split(",") if t.strip()]
        if o["tag"]:
            tags.insert(0, o["tag"])
        if not tags:
            raise CommandError("give a tag or --tags a,b,c", returncode=4)
        result = experiments_start(tags=tags, pause_after=o["pause_after"])
        if o["json"]:
            self.stdout.write(json.dumps(result.to_dict()))
        else:
            for item in result.started:
                self.stdout.write(f"started {item['tag']}: run {item['run_id']}")
            for item in result.failed:
                err = item["error"]
                self.stderr.write(
                    f"failed {item['tag']}: [{err['code']}] {err['message']} ({err['fix']})"
                )
        if result.failed:
            sys.exit(1)

    def _status(self, o: dict[str, Any]) -> None:
        run = run_resolve(ref=o["ref"])
        progress = run_progress(run=run)
        if o["json"]:
            self.stdout.write(json.dumps(progress.to_json()))
        else:
            self.stdout.write(render_progress(progress))

    def _watch(self, o: dict[str, Any]) -> None:
        run = run_resolve(ref=o["ref"])
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
        started = time.monotonic()
        tty = self.stdout.isatty() and not o["json"]
        while True:
            run.refresh_from_db()
            progress = run_progress(run=run)
            if o["json"]:
                self.stdout.write(json.dumps(progress.to_json()))
                self.stdout.flush()
            else:
                text = render_progress(progress)
                if tty:
                    self.stdout.write("\x1b[2J\x1b[H" + text)
                else:
                    self.stdout.write(text)
            terminal = run.status in ("completed", "failed", "canceled")
            if terminal or (o["until_paused"] and run.status == "paused"):
                sys.exit(EXIT_CODES[run.status])
            if stop["now"] or (o["timeout"] and time.monotonic() - started > o["timeout"]):
                sys.exit(5)
            time.sleep(max(o["interval"], 0.1))

    def _pause(self, o: dict[str, Any]) -> None:
        run = run_pause(run_id=run_resolve(ref=o["ref"]).pk)
        self.stdout.write(f"run {run.pk} {run.status}")

    def _resume(self, o: dict[str, Any]) -> None:
        run = run_resume(
            run_id=run_resolve(ref=o["ref"]).pk,
            pause_after=o["pause_after"],
            clear=o["clear_pause_after"],
        )
        self.stdout.write(f"run {run.pk} {run.status} (pause_after={run.pause_after})")

    def _cancel(self, o: dict[str, Any]) -> None:
        run = run_cancel(run_id=run_resolve(ref=o["ref"]).pk)
        self.stdout.write(f"run {run.pk} {run.status}")

    def _export(self, o: dict[str, Any]) -> None:
        from orchestration.export import run_export

        run = run_resolve(ref=o["ref"])
        result = run_export(
            run=run,
            fmt=o["format"],
            path=o["out"],
            allow_incomplete=o["allow_incomplete"],
        )
        self.stdout.write(f"exported {result.rows} rows to {result.path}")
        self.stdout.write(f"manifest: {result.manifest_path}")

    def _list(self, o: dict[str, Any]) -> None:
        from orchestration.models import Experiment, Run

        for exp in Experiment.objects.select_related("template").order_by("tag"):
            latest = Run.objects.filter(experiment=exp).order_by("-pk").first()
            state = f"run {latest.pk} {latest.status}/{latest.current_stage}" if latest else "-"
            self.stdout.write(f"{exp.tag:<32} {exp.template!s:<28} {state}")
