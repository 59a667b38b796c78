"""``manage.py export_run <run_id|tag> --format parquet|csv|jsonl [--out PATH] [--allow-incomplete]``.

Thin, like ``experiments``: resolve the run, call :func:`orchestration.export.run_export`,
print where the file went, how many rows it has and a short summary. Errors (an unknown run,
a run that is not completed) are ServiceErrors turned into a CommandError that carries the
fix, with exit code 4 (the ``experiments`` command's code for usage and lookup errors), so a
script can tell "nothing exported" from success.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.export import FORMATS, run_export
from orchestration.services.control import run_resolve
from orchestration.services.errors import ServiceError
from orchestration.summary import render_summary, run_summary

EXIT_USAGE = 4


class Command(BaseCommand):
    help = (
        "Export a run's responses (one row per score target) as Parquet, CSV or JSONL, "
        "with a manifest next to the file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ref", help="run id, or experiment tag (its latest run)")
        parser.add_argument("--format", dest="fmt", choices=FORMATS, default="parquet")
        parser.add_argument("--out", help="output file (default: var/exports/<tag>-run<id>.<ext>)")
        parser.add_argument(
            "--allow-incomplete",
            action="store_true",
            help="also export a run that is not completed (rows without a score are 'failed')",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run = run_resolve(ref=options["ref"])
            result = run_export(
                run=run,
                fmt=options["fmt"],
                path=options["out"],
                allow_incomplete=options["allow_incomplete"],
            )
            summary = run_summary(run=run)
        except ServiceError as exc:
            raise CommandError(f"[{exc.code}] {exc}", returncode=EXIT_USAGE) from exc
        self.stdout.write(f"exported {result.rows} rows to {result.path}")
        self.stdout.write(f"manifest: {result.manifest_path}")
        self.stdout.write(render_summary(summary))
