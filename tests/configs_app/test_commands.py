"""``manage.py configs`` and ``manage.py preflight`` through call_command."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from configs_app.models import ConfigTemplate
from configs_app.services import template_create
from tests.configs_app.conftest import WriteFile
from tests.configs_app.helpers import template_doc

pytestmark = pytest.mark.django_db

NO_PROVIDERS = {
    "OPENAI_API_KEY": None,
    "ANTHROPIC_API_KEY": None,
    "FIRECRAWL_API_KEY": None,
    "OPENAI_BASE_URL": None,
    "ANTHROPIC_BASE_URL": None,
    "FIRECRAWL_API_URL": None,
    "JUDGE_SIMULATOR_URL": None,
}


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_import_prints_created_then_unchanged(body: dict[str, Any], write_file: WriteFile) -> None:
    path = write_file(template_doc(body, "cmd"))
    first = run("configs", "import", str(path))
    template = ConfigTemplate.objects.get()
    assert first.strip() == f"created cmd@v1 signature={template.spec_signature}"
    second = run("configs", "import", str(path))
    assert second.strip() == f"unchanged cmd@v1 signature={template.spec_signature}"
    changed = copy.deepcopy(body)
    changed["sample_count"] = 11
    third = run("configs", "import", str(write_file(template_doc(changed, "cmd"), "b.yaml")))
    assert third.startswith("created cmd@v2 ")


def test_import_error_names_file_field_fix_and_writes_nothing(
    body: dict[str, Any], write_file: WriteFile
) -> None:
    good = write_file(template_doc(body, "good"), "good.yaml")
    body["scoring"]["evidence_view"] = "sideways"
    bad = write_file(template_doc(body, "bad"), "bad.yaml")
    with pytest.raises(CommandError) as info:
        run("configs", "import", str(good), str(bad))
    message = str(info.value)
    assert "nothing imported" in message
    assert f"{bad}: spec.scoring.evidence_view:" in message
    assert "fix: use one of" in message
    assert ConfigTemplate.objects.count() == 0


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_output_reimports_unchanged(
    body: dict[str, Any], write_file: WriteFile, fmt: str
) -> None:
    first = template_create(template_id="exp", body=body, notes="v1 notes")
    body["rubric"]["scale_size"] = 9
    second = template_create(template_id="exp", body=body)
    exported_v1 = run("configs", "export", "exp", "--version", "1", "--format", fmt)
    exported_latest = run("configs", "export", "exp", "--format", fmt)
    if fmt == "yaml":
        assert exported_v1.startswith(f"# exported exp@v1 spec_signature={first.spec_signature}")
    else:
        assert json.loads(exported_v1)["spec"]["rubric"]["scale_size"] == 4
    out = run("configs", "import", str(write_file(exported_latest, f"latest.{fmt}")))
    assert out.strip() == f"unchanged exp@v2 signature={second.spec_signature}"
    out = run("configs", "import", str(write_file(exported_v1, f"v1.{fmt}")))
    assert out.startswith("created exp@v3 ")
    assert ConfigTemplate.objects.get(version=3).spec_signature == first.spec_signature


def test_export_unknown_template_fails() -> None:
    with pytest.raises(CommandError, match="no template 'ghost'"):
        run("configs", "export", "ghost")


def test_list_plain_and_json(body: dict[str, Any]) -> None:
    assert "no config templates" in run("configs", "list")
    template_create(template_id="alpha", body=body)
    body["sample_count"] = 2
    latest = template_create(template_id="alpha", body=body)
    template_create(template_id="beta", body=body)
    text = run("configs", "list")
    assert "alpha" in text
    assert "beta" in text
    assert latest.spec_signature[:12] in text
    rows = json.loads(run("configs", "list", "--json"))
    assert [(r["template_id"], r["latest_version"], r["versions"]) for r in rows] == [
        ("alpha", 2, 2),
        ("beta", 1, 1),
    ]
    assert rows[0]["spec_signature"] == latest.spec_signature


def test_subcommand_required() -> None:
    with pytest.raises(CommandError):
        run("configs")


# --- preflight ---------------------------------------------------------------------------------


@override_settings(**NO_PROVIDERS)
def test_preflight_command_missing_key_exits_nonzero(body: dict[str, Any]) -> None:
    template_create(template_id="pf", body=body)
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 requirement"):
        call_command("preflight", "pf@1", stdout=out)
    text = out.getvalue()
    assert "MISSING  OPENAI_API_KEY" in text
    assert "scoring.model=gpt-4.1-mini" in text
    assert "fix: set OPENAI_API_KEY in the environment" in text
    assert ".env.example" in text


@override_settings(**{**NO_PROVIDERS, "OPENAI_API_KEY": "sk-test"})
def test_preflight_command_ok_with_key(body: dict[str, Any]) -> None:
    template_create(template_id="pf", body=body)
    text = run("preflight", "pf")
    assert "OK       OPENAI_API_KEY  (OPENAI_API_KEY is set)" in text
    assert text.rstrip().endswith("preflight ok")


@override_settings(**{**NO_PROVIDERS, "JUDGE_SIMULATOR_URL": "http://127.0.0.1:8765"})
def test_preflight_command_on_file_with_simulator(
    body: dict[str, Any], write_file: WriteFile
) -> None:
    body["scoring"]["model"] = "claude-haiku-4.5"
    body["evidence"] = {"window_tags": ["w"]}
    path = write_file(template_doc(body, "pf-file"))
    text = run("preflight", str(path))
    for name in ("ANTHROPIC_API_KEY", "FIRECRAWL_API_KEY", "OPENAI_API_KEY"):
        assert f"OK       {name}  (JUDGE_SIMULATOR_URL=http://127.0.0.1:8765)" in text
    assert ConfigTemplate.objects.count() == 0  # preflight of a file writes nothing


def test_preflight_command_bad_target(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no template 'nope'"):
        run("preflight", "nope")
    with pytest.raises(CommandError, match="cannot read"):
        run("preflight", str(tmp_path / "missing.yaml"))
