"""``manage.py preflight <template_id[@version] | file.yaml>``: check credentials for a spec.

Prints every requirement as OK (and how it is satisfied) or MISSING (with the fix); exits 1
when anything is missing, so scripts can gate a run start on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from configs_app.importfile import EXTENSIONS, load_template_file
from configs_app.models import ConfigTemplate
from configs_app.preflight import preflight_for_spec
from configs_app.services import template_get, template_ref_parse
from configs_app.spec import SpecError


class Command(BaseCommand):
    help = "Check that the environment has the credentials a config template needs."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("target", help="template_id, template_id@version, or a template file")

    def handle(self, *args: Any, **options: Any) -> None:
        target: str = options["target"]
        try:
            if Path(target).suffix.lower() in EXTENSIONS or Path(target).is_file():
                document = load_template_file(target)
                label, body = f"{target} ({document.template_id})", document.spec
            else:
                template_id, version = template_ref_parse(target)
                template = template_get(template_id=template_id, version=version)
                label, body = str(template), template.config_body
            result = preflight_for_spec(body)
        except (SpecError, ConfigTemplate.DoesNotExist, ValueError) as exc:
            raise CommandError(str(exc)) from None

        self.stdout.write(f"preflight for {label}")
        for ok in result.satisfied:
            self.stdout.write(f"  OK       {ok.name}  ({ok.via})")
        for missing in result.missing:
            self.stdout.write(f"  MISSING  {missing.name}  {missing.reason}")
            self.stdout.write(f"           fix: {missing.fix}")
        if not result.ok:
            raise CommandError(f"preflight failed: {len(result.missing)} requirement(s) missing")
        self.stdout.write("preflight ok")
