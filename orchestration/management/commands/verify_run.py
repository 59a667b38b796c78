"""``manage.py verify_run <tag|run_id> [--simulator URL] [--full-log] [--window] [--json]``.

Checks PROOF.md section 1 for one run from the database (and, with ``--simulator``, the
provider's submission log) and exits 1 on any violation, 0 when clean, so scripts and CI can
gate on it. Thin: resolve, call :mod:`orchestration.verify`, print.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.services.control import run_resolve
from orchestration.services.errors import ServiceError
from orchestration.verify import (
    VerifierUnsupported,
    VerifyReport,
    fetch_submissions,
    verify_run,
    verify_window_run,
)


class Command(BaseCommand):
    help = "Verify a run: nothing lost, nothing duplicated, ledger and counters consistent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ref", help="run id or experiment tag (latest run); --window: id")
        parser.add_argument(
            "--simulator",
            help="provider simulator URL: check provider submissions per attempt too",
        )
        parser.add_argument(
            "--full-log",
            action="store_true",
            help="read the whole submission log (also finds results never submitted)",
        )
        parser.add_argument(
            "--window", action="store_true", help="REF is an evidence window run id"
        )
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        submissions = None
        if options["simulator"]:
            try:
                submissions = fetch_submissions(options["simulator"], full=options["full_log"])
            except OSError as exc:
                raise CommandError(
                    f"cannot read the submission log from {options['simulator']}: {exc} "
                    "(fix: start the simulator or drop --simulator)"
                ) from exc
        try:
            report = self._verify(options, submissions)
        except VerifierUnsupported as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report.to_json(), default=str))
        else:
            self.stdout.write(report.render())
        if not report.ok:
            sys.exit(1)

    def _verify(self, options: dict[str, Any], submissions: dict[str, int] | None) -> VerifyReport:
        complete = bool(options["full_log"] and submissions is not None)
        if options["window"]:
            from evidence.models import WindowRun

            ref = str(options["ref"])
            window_run = WindowRun.objects.filter(pk=int(ref)).first() if ref.isdigit() else None
            if window_run is None:
                raise CommandError(f"no window run {options['ref']!r} (fix: pass its id)")
            return verify_window_run(
                window_run=window_run, submissions=submissions, submissions_complete=complete
            )
        try:
            run = run_resolve(ref=options["ref"])
        except ServiceError as exc:
            raise CommandError(f"[{exc.code}] {exc}") from exc
        return verify_run(run=run, submissions=submissions, submissions_complete=complete)
