"""``manage.py configs import|export|list``: author templates from files.

Thin (STYLE.md habit 14): parse arguments, call a service, print. Every error leaves through
CommandError, so the exit code is non-zero and the message names file, field and fix.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError

from configs_app.models import ConfigTemplate
from configs_app.selectors import template_summaries
from configs_app.services import template_export, template_get, template_import_many
from configs_app.spec import SpecError


class Command(BaseCommand):
    help = "Import, export and list versioned experiment config templates."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{import,export,list}")

        imp = sub.add_parser("import", help="Import YAML/JSON template files (all or nothing).")
        imp.add_argument("files", nargs="+", help="*.yaml, *.yml or *.json template files")
        imp.add_argument("--created-by", default="cli", help="recorded on new versions")

        exp = sub.add_parser("export", help="Write one template version as an importable file.")
        exp.add_argument("template_id")
        exp.add_argument("--version", type=int, default=None, help="default: the latest")
        exp.add_argument("--format", choices=("yaml", "json"), default="yaml")

        lst = sub.add_parser("list", help="List templates (latest version of each).")
        lst.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "import":
            self._import(options["files"], created_by=options["created_by"])
        elif action == "export":
            self._export(options["template_id"], options["version"], options["format"])
        else:
            self._list(as_json=options["json"])

    def _import(self, files: list[str], *, created_by: str) -> None:
        try:
            results = template_import_many(paths=files, created_by=created_by)
        except SpecError as exc:
            raise CommandError(f"nothing imported:\n{exc}") from None
        for result in results:
            word = "created" if result.created else "unchanged"
            self.stdout.write(
                f"{word} {result.template} signature={result.template.spec_signature}"
            )

    def _export(self, template_id: str, version: int | None, fmt: str) -> None:
        try:
            document = template_export(template_id=template_id, version=version)
            template = template_get(template_id=template_id, version=version)
        except ConfigTemplate.DoesNotExist as exc:
            raise CommandError(str(exc)) from None
        if fmt == "json":
            self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False))
            return
        header = (
            f"# exported {template} spec_signature={template.spec_signature}\n"
            "# re-import with: manage.py configs import <this file>.yaml\n"
        )
        body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        self.stdout.write(header + body, ending="")

    def _list(self, *, as_json: bool) -> None:
        summaries = template_summaries()
        rows = [
            {
                "template_id": s.latest.template_id,
                "latest_version": s.latest.version,
                "versions": s.version_count,
                "spec_signature": s.latest.spec_signature,
                "created_at": s.latest.created_at.isoformat(),
                "created_by": s.latest.created_by,
            }
            for s in summaries
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("no config templates; add one with: manage.py configs import FILE")
            return
        self.stdout.write(f"{'TEMPLATE':<32} {'LATEST':>6} {'VERSIONS':>8}  SIGNATURE     CREATED")
        for row in rows:
            self.stdout.write(
                f"{row['template_id']:<32} {'v' + str(row['latest_version']):>6} "
                f"{row['versions']:>8}  {str(row['spec_signature'])[:12]}  {row['created_at']}"
            )
