"""Template versioning, idempotent import, bad files, export round trip, run-config snapshots."""

from __future__ import annotations

import copy
import json
import subprocess
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.db import connection

from configs_app import provenance
from configs_app.models import ConfigTemplate, RunConfig, ValidationStatus
from configs_app.services import (
    run_config_create,
    template_create,
    template_export,
    template_get,
    template_import,
    template_import_many,
    template_ref_parse,
)
from configs_app.spec import SpecError, normalize_spec, sha256_canonical, spec_signature
from tests.configs_app.conftest import WriteFile
from tests.configs_app.helpers import template_doc

PROJECT_DIR = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT_DIR / "examples" / "configs"

pytestmark = pytest.mark.django_db


# --- versioning --------------------------------------------------------------------------------


def test_template_create_versions_count_up(body: dict[str, Any]) -> None:
    first = template_create(template_id="exp", body=body, created_by="ana", notes="n1")
    body["rubric"]["scale_size"] = 5
    second = template_create(template_id="exp", body=body)
    third = template_create(template_id="exp", body=body)  # create always makes a version
    other = template_create(template_id="other", body=body)
    assert [first.version, second.version, third.version, other.version] == [1, 2, 3, 1]
    assert first.config_body == normalize_spec(DEMO_COPY := copy.deepcopy(first.config_body))
    assert DEMO_COPY["rubric"]["scale_size"] == 4
    assert first.spec_signature == spec_signature(first.config_body)
    assert second.spec_signature == third.spec_signature != first.spec_signature
    assert (first.created_by, first.notes, first.schema_version) == ("ana", "n1", 1)


def test_template_create_rejects_invalid_body_and_writes_nothing(body: dict[str, Any]) -> None:
    body["scoring"]["evidence_view"] = "nope"
    with pytest.raises(SpecError) as info:
        template_create(template_id="exp", body=body)
    assert info.value.issues[0]["path"] == "scoring.evidence_view"
    assert ConfigTemplate.objects.count() == 0


@pytest.mark.parametrize("template_id", ["has space", "", "a/b", "x" * 101])
def test_template_create_rejects_bad_slug(body: dict[str, Any], template_id: str) -> None:
    with pytest.raises(SpecError, match="template_id"):
        template_create(template_id=template_id, body=body)
    assert ConfigTemplate.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_versions_get_distinct_numbers(body: dict[str, Any]) -> None:
    """Eight creators racing from version 1: the unique constraint settles v1, the row lock
    serializes the rest; every one gets its own number."""
    assert connection.vendor == "postgresql"
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            barrier.wait(timeout=10)
            template_create(template_id="race", body=body)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    versions = sorted(
        ConfigTemplate.objects.filter(template_id="race").values_list("version", flat=True)
    )
    assert versions == list(range(1, 9))


# --- import ------------------------------------------------------------------------------------


def test_import_is_idempotent_and_versions_changes(
    body: dict[str, Any], write_file: WriteFile
) -> None:
    path = write_file(template_doc(body, notes="first"))
    first = template_import(path=path, created_by="cli")
    again = template_import(path=path)
    assert (first.created, again.created) == (True, False)
    assert again.template.pk == first.template.pk
    assert ConfigTemplate.objects.count() == 1

    # Notes are not part of the signature: still unchanged.
    template_import(path=write_file(template_doc(body, notes="edited notes")))
    assert ConfigTemplate.objects.count() == 1

    # Key order and randomization order do not matter either.
    shuffled = {k: body[k] for k in reversed(list(body))}
    shuffled["scoring"]["randomizations"] = list(reversed(body["scoring"]["randomizations"]))
    assert not template_import(path=write_file(template_doc(shuffled), "s.json")).created

    changed = copy.deepcopy(body)
    changed["rubric"]["concept"] = "illiberal democracy"
    result = template_import(path=write_file(template_doc(changed), "changed.yaml"))
    assert result.created
    assert result.template.version == 2
    assert result.template.config_body["rubric"]["concept"] == "illiberal democracy"
    # Going back to the first body is a change relative to the latest version.
    assert template_import(path=path).template.version == 3


def test_examples_import_and_legacy_view_hashes_like_modern() -> None:
    results = template_import_many(paths=sorted(EXAMPLES.glob("*.yaml")))
    by_id = {r.template.template_id: r.template for r in results}
    assert set(by_id) == {"demo-fascism", "v3-matrix", "lab-default", "legacy-view"}
    demo, legacy = by_id["demo-fascism"], by_id["legacy-view"]
    assert legacy.config_body["scoring"]["evidence_view"] == "l2_neutralized"
    assert legacy.config_body == demo.config_body
    assert legacy.spec_signature == demo.spec_signature
    raw = yaml.safe_load((EXAMPLES / "legacy_view.yaml").read_text())
    assert raw["spec"]["scoring"]["evidence_view"] == "neutralized"
    lab = by_id["lab-default"].config_body
    assert (lab["rubric"]["scale_size"], lab["scoring"]["method"]) == (5, "single")
    assert (lab["scoring"]["evidence_view"], lab["scoring"]["randomizations"]) == ("l0_raw", [])
    assert demo.config_body["scoring"]["clustering_seed"] == 7
    assert demo.config_body["evidence"]["pool_tag"] == "demo-pool"


BAD_FILES: list[tuple[str, str, Any, str, str]] = [
    # (case, file name, content, expected issue path, expected text in the message or fix)
    (
        "unknown top key",
        "a.yaml",
        {"template_id": "t", "spec": "BODY", "owner": "x"},
        "owner",
        "allowed top-level keys",
    ),
    (
        "unknown spec key",
        "a.yaml",
        {"template_id": "t", "spec": {"extra_axis": 1}},
        "spec.extra_axis",
        "allowed fields",
    ),
    (
        "bad enum",
        "a.yaml",
        {"template_id": "t", "spec": {"scoring": {"evidence_view": "l5"}}},
        "spec.scoring.evidence_view",
        "l3_abstracted",
    ),
    (
        "missing evidence",
        "a.yaml",
        {"template_id": "t", "spec": {"evidence": {}}},
        "spec.evidence",
        "pool_tag",
    ),
    (
        "unknown model",
        "a.json",
        {"template_id": "t", "spec": {"rubric": {"model": "gpt-2"}}},
        "spec.rubric.model",
        "gpt-4.1-mini",
    ),
    (
        "secret",
        "a.yaml",
        {"template_id": "t", "spec": {"scoring": {"api_key": "x"}}},
        "spec.scoring.api_key",
        ".env.example",
    ),
    (
        "secret value in notes",
        "a.yaml",
        {"template_id": "t", "notes": "sk-" + "q" * 30, "spec": "BODY"},
        "notes",
        "environment",
    ),
    (
        "bad schema version",
        "a.yaml",
        {"template_id": "t", "schema_version": 2, "spec": "BODY"},
        "schema_version",
        "use one of [1]",
    ),
    (
        "bad template id",
        "a.yaml",
        {"template_id": "no spaces", "spec": "BODY"},
        "template_id",
        "letters",
    ),
    ("missing template id", "a.yaml", {"spec": "BODY"}, "template_id", "template_id"),
    ("missing spec", "a.yaml", {"template_id": "t"}, "spec", "rubric"),
    ("yaml syntax", "a.yaml", "template_id: t\nspec:\n  rubric: [unclosed\n", "(file)", "line"),
    (
        "yaml duplicate key",
        "a.yaml",
        "template_id: t\ntemplate_id: u\nspec: {}\n",
        "(file)",
        "duplicate key",
    ),
    ("json syntax", "a.json", '{"template_id": "t",}', "(file)", "line 1"),
    (
        "json duplicate key",
        "a.json",
        '{"template_id": "t", "template_id": "u"}',
        "(file)",
        "duplicate key",
    ),
    ("not a mapping", "a.yaml", "- just\n- a list\n", "(file)", "mapping"),
    ("bad extension", "a.toml", "x = 1", "(file)", ".yaml"),
]


def _materialize(content: Any, body: dict[str, Any]) -> Any:
    """Fill a partial spec from the valid body, so each case has exactly one problem."""
    if not isinstance(content, dict):
        return content
    content = copy.deepcopy(content)
    if content.get("spec") == "BODY":
        content["spec"] = copy.deepcopy(body)
    elif isinstance(content.get("spec"), dict):
        spec = copy.deepcopy(body)
        for key, value in content["spec"].items():
            if isinstance(value, dict) and value and isinstance(spec.get(key), dict):
                spec[key].update(value)
            else:
                spec[key] = value
        content["spec"] = spec
    return content


@pytest.mark.parametrize(
    ("name", "content", "path", "expected"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_import_files_name_file_field_and_fix_and_write_nothing(
    body: dict[str, Any],
    write_file: WriteFile,
    name: str,
    content: Any,
    path: str,
    expected: str,
) -> None:
    template_create(template_id="t", body=body)  # a prior version must stay the only row
    file_path = write_file(_materialize(content, body), name)
    with pytest.raises(SpecError) as info:
        template_import(path=file_path)
    error = info.value
    assert error.source == str(file_path)
    assert str(file_path) in str(error)
    issue = next((i for i in error.issues if i["path"] == path), None)
    assert issue is not None, error.issues
    assert expected in issue["message"] + issue["fix"]
    assert issue["fix"]
    assert ConfigTemplate.objects.count() == 1


def test_import_many_is_all_or_nothing(body: dict[str, Any], write_file: WriteFile) -> None:
    good = write_file(template_doc(body, "good"), "good.yaml")
    bad_body = copy.deepcopy(body)
    bad_body["sample_count"] = 0
    bad = write_file(template_doc(bad_body, "bad"), "bad.yaml")
    with pytest.raises(SpecError) as info:
        template_import_many(paths=[good, bad])
    assert info.value.source == str(bad)
    assert info.value.issues[0]["path"] == "spec.sample_count"
    assert ConfigTemplate.objects.count() == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        template_import(path=tmp_path / "absent.yaml")


# --- get / export ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_reimports_to_same_signature(
    body: dict[str, Any], write_file: WriteFile, fmt: str
) -> None:
    template_create(template_id="rt", body=body, notes="round trip")
    body["rubric"]["concept"] = "populism"
    latest = template_create(template_id="rt", body=body)
    exported = template_export(template_id="rt", version=1)
    assert exported["notes"] == "round trip"
    assert set(exported) == {"template_id", "schema_version", "notes", "spec"}
    text = yaml.safe_dump(exported) if fmt == "yaml" else json.dumps(exported)

    # Into a fresh template id: same signature as v1.
    fresh = dict(exported, template_id="rt-copy")
    copy_text = yaml.safe_dump(fresh) if fmt == "yaml" else json.dumps(fresh)
    imported = template_import(path=write_file(copy_text, f"copy.{fmt}"))
    assert imported.created
    assert (
        imported.template.spec_signature == template_get(template_id="rt", version=1).spec_signature
    )
    # The latest export re-imports as unchanged.
    latest_doc = template_export(template_id="rt")
    latest_text = yaml.safe_dump(latest_doc) if fmt == "yaml" else json.dumps(latest_doc)
    again = template_import(path=write_file(latest_text, f"latest.{fmt}"))
    assert not again.created
    assert again.template.pk == latest.pk
    assert text  # v1's export is valid text too


def test_template_get_errors_list_what_exists(body: dict[str, Any]) -> None:
    template_create(template_id="known", body=body)
    with pytest.raises(ConfigTemplate.DoesNotExist, match="known"):
        template_get(template_id="unknown")
    with pytest.raises(ConfigTemplate.DoesNotExist, match=r"versions \[1\], not 7"):
        template_get(template_id="known", version=7)
    assert template_get(template_id="known").version == 1


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("demo", ("demo", None)), ("demo@3", ("demo", 3)), ("demo-x_1@v12", ("demo-x_1", 12))],
)
def test_template_ref_parse(ref: str, expected: tuple[str, int | None]) -> None:
    assert template_ref_parse(ref) == expected


@pytest.mark.parametrize("ref", ["", "demo@", "demo@x", "a b"])
def test_template_ref_parse_rejects(ref: str) -> None:
    with pytest.raises(ValueError, match="template reference"):
        template_ref_parse(ref)


# --- run configs -------------------------------------------------------------------------------


POLICY = {"max_request_attempts": {"value": 3, "source": "global"}, "rpm": {"value": 500.0}}


def test_run_config_create_snapshots_everything(body: dict[str, Any]) -> None:
    template = template_create(template_id="rc", body=body)
    rc = run_config_create(template=template, resolved_policy=POLICY, git_sha="deadbeef")
    rc = RunConfig.objects.get(pk=rc.pk)
    assert rc.config_template_id == template.pk
    assert (rc.template_id, rc.template_version) == ("rc", 1)
    assert rc.config_body == template.config_body
    assert rc.resolved_policy == POLICY
    assert rc.git_sha == "deadbeef"
    assert rc.validation_status == ValidationStatus.VALID
    assert rc.spec_signature == sha256_canonical(
        {"spec": template.config_body, "resolved_policy": POLICY}
    )
    assert rc.spec_signature != template.spec_signature
    other = run_config_create(
        template=template, resolved_policy={**POLICY, "rpm": {"value": 100}}, git_sha="x"
    )
    assert other.spec_signature != rc.spec_signature
    same = run_config_create(template=template, resolved_policy=dict(POLICY), git_sha="other sha")
    assert same.spec_signature == rc.spec_signature  # code version is not part of it


def test_run_config_defaults_git_sha_to_head(body: dict[str, Any]) -> None:
    template = template_create(template_id="rc", body=body)
    rc = run_config_create(template=template, resolved_policy={})
    head = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert rc.git_sha == head


def test_run_config_revalidates_stored_body(body: dict[str, Any]) -> None:
    # A row written by an older, looser engine: inserted directly, bypassing the service.
    stale = ConfigTemplate.objects.create(
        template_id="old",
        version=1,
        config_body={**body, "retired_axis": True},
        spec_signature="0" * 64,
    )
    with pytest.raises(SpecError) as info:
        run_config_create(template=stale, resolved_policy={}, git_sha="x")
    assert info.value.issues[0]["path"] == "retired_axis"
    assert "old@v1" in str(info.value)
    assert RunConfig.objects.count() == 0

    recorded = run_config_create(
        template=stale, resolved_policy={}, git_sha="x", allow_invalid=True
    )
    assert recorded.validation_status == ValidationStatus.INVALID
    assert recorded.validation_errors[0]["path"] == "retired_axis"


def test_run_config_normalizes_legacy_body(body: dict[str, Any]) -> None:
    body["scoring"]["evidence_view"] = "cleaned"
    stale = ConfigTemplate.objects.create(
        template_id="old", version=1, config_body=body, spec_signature="0" * 64
    )
    rc = run_config_create(template=stale, resolved_policy={}, git_sha="x")
    assert rc.config_body["scoring"]["evidence_view"] == "l1_cleaned"


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        ({"openai": {"api_key": "x"}}, "resolved_policy.openai.api_key"),
        ({"rpm": float("inf")}, "not canonical JSON"),
        ({"models": {"a", "b"}}, "not canonical JSON"),
    ],
)
def test_run_config_rejects_bad_policy(
    body: dict[str, Any], policy: dict[str, Any], text: str
) -> None:
    template = template_create(template_id="rc", body=body)
    with pytest.raises(SpecError, match=text.replace(".", r"\.")):
        run_config_create(template=template, resolved_policy=policy, git_sha="x")
    assert RunConfig.objects.count() == 0


# --- provenance --------------------------------------------------------------------------------


def test_code_version_fallbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert provenance.git_head(tmp_path) is None  # not a repository
    monkeypatch.setattr(metadata, "version", lambda name: "1.2.3")
    assert provenance.code_version(tmp_path) == "judge-gym==1.2.3"

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert provenance.code_version(tmp_path) == "unknown"
    assert len(provenance.code_version()) == 40


def test_export_keeps_authoring_order_despite_jsonb(body: dict[str, Any]) -> None:
    """jsonb returns keys shuffled (by length); the export restores the schema's order."""
    template_create(template_id="order", body=body)
    stored = ConfigTemplate.objects.get().config_body
    spec = template_export(template_id="order")["spec"]
    assert spec == stored
    assert list(spec) == [
        "models",
        "rubric",
        "scoring",
        "sample_count",
        "evidence",
        "pause_after",
        "max_output_tokens",
    ]
    assert list(spec["rubric"]) == ["model", "scale_size", "concept"]
    assert list(spec["scoring"])[:4] == ["model", "method", "abstain_enabled", "evidence_view"]
    assert list(spec["models"]["gpt-4.1-mini"])[:2] == ["provider", "provider_model"]
