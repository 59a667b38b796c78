"""Bad input, part 1: config files, spec bodies, the import command (1,000 examples each).

Properties: an invalid document is refused with a ``SpecError`` whose every issue names a
path and a fix, at least one issue is about a mutated field, and nothing is written; a valid
one imports. No other exception type may escape (a traceback is not an error message).
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs_app.importfile import document_from_data
from configs_app.models import ConfigTemplate
from configs_app.spec import SpecError, normalize_spec, spec_signature
from tests.fuzz.strategies import Mutated, mutated_specs, names_mutation

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _assert_clear(exc: SpecError, mutated: Mutated, *, prefix: str = "") -> None:
    assert exc.issues, "a SpecError without issues"
    for issue in exc.issues:
        assert issue["fix"].strip(), f"issue without a fix: {issue}"
        assert issue["message"].strip(), f"issue without a message: {issue}"
    paths = [f"{prefix}{p}" for p in mutated.paths]
    if paths:
        assert any(names_mutation(i, p) for i in exc.issues for p in paths), (
            f"no issue names a mutated field {paths}: {exc.issues}"
        )


def _nonfinite(doc: Any) -> bool:
    if isinstance(doc, float):
        return not math.isfinite(doc)
    if isinstance(doc, dict):
        return any(_nonfinite(v) for v in doc.values())
    if isinstance(doc, list):
        return any(_nonfinite(v) for v in doc)
    return False


@FUZZ
@given(
    mutated=mutated_specs(),
    top=st.sampled_from(["ok", "unknown", "bad_id", "bad_version", "no_spec", "list"]),
)
def test_template_documents(mutated: Mutated, top: str) -> None:
    data: Any = {"template_id": "fuzz-t", "spec": mutated.doc}
    extra_paths: list[str] = []
    if top == "unknown":
        data["colour"] = "blue"
        extra_paths.append("colour")
    elif top == "bad_id":
        data["template_id"] = "not a slug!"
        extra_paths.append("template_id")
    elif top == "bad_version":
        data["schema_version"] = 2
        extra_paths.append("schema_version")
    elif top == "no_spec":
        del data["spec"]
        extra_paths.append("spec")
    elif top == "list":
        data = [data]
    try:
        document_from_data(data, source="fuzz.yaml")
    except SpecError as exc:
        probe = Mutated(
            mutated.doc, [f"spec.{p}" for p in mutated.paths] + extra_paths, mutated.kinds
        )
        _assert_clear(exc, probe)
        return
    except ValueError as exc:  # e.g. a non-finite number reaching the signature
        pytest.fail(
            f"unclear error for {mutated.kinds} at {mutated.paths}: {type(exc).__name__}: {exc}"
        )
    assert top == "ok"


@FUZZ
@given(mutated=mutated_specs(max_mutations=3))
def test_spec_bodies_are_accepted_or_refused_clearly(mutated: Mutated) -> None:
    """A spec body is either refused with a SpecError naming a mutated path and a fix, or it
    normalizes to a finite, stable form whose signature is a function of that form."""
    try:
        normalized = normalize_spec(mutated.doc)
    except SpecError as exc:
        _assert_clear(exc, mutated)
        return
    except Exception as exc:
        pytest.fail(
            f"parse_spec crashed for {mutated.kinds} at {mutated.paths}: "
            f"{type(exc).__name__}: {exc}"
        )
    assert not _nonfinite(normalized), "a non-finite number passed validation"
    assert normalize_spec(normalized) == normalized, "normalization is not idempotent"
    signature = spec_signature(mutated.doc)
    assert signature == spec_signature(normalized)
    assert len(signature) == 64


def _serialize(doc: Any, fmt: str, damage: str, cut: float) -> str:
    text = json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc, sort_keys=False)
    if damage == "truncate":
        text = text[: max(int(len(text) * cut), 1)]
    elif damage == "garbage":
        text = (
            text[: int(len(text) * cut)]
            + "\x00{[:: !!python/object:os.system\n\t- ]"
            + text[int(len(text) * cut) :]
        )
    elif damage == "dupkey":
        text = text.replace('"template_id"', '"template_id": "x", "template_id"', 1) if fmt == "json" else (
            "template_id: dup\n" + text
        )  # fmt: skip
    return text


@pytest.mark.django_db
@FUZZ
@given(
    mutated=mutated_specs(max_mutations=1),
    fmt=st.sampled_from(["yaml", "json"]),
    damage=st.sampled_from(["none", "none", "truncate", "garbage", "dupkey"]),
    cut=st.floats(0.05, 0.95),
)
def test_configs_import_command(mutated: Mutated, fmt: str, damage: str, cut: float) -> None:
    """``manage.py configs import FILE``: clear CommandError and no rows, or an import."""
    doc = {"template_id": "fuzz-cli", "spec": mutated.doc}
    text = _serialize(doc, fmt, damage, cut)
    before = ConfigTemplate.objects.count()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t.{fmt}"
        path.write_text(text, encoding="utf-8")
        out = io.StringIO()
        try:
            call_command("configs", "import", str(path), stdout=out, stderr=io.StringIO())
        except CommandError as exc:
            message = str(exc)
            assert message.startswith("nothing imported"), message
            assert str(path) in message, f"the error does not name the file: {message}"
            assert "(fix: " in message, f"the error gives no fix: {message}"
            assert ConfigTemplate.objects.count() == before, "a refused import wrote rows"
            return
        except Exception as exc:
            pytest.fail(
                f"configs import crashed with {type(exc).__name__}: {exc} "
                f"(mutations {mutated.kinds} at {mutated.paths}, damage {damage})"
            )
    assert damage in ("none", "truncate", "garbage") or fmt == "yaml"
    assert ConfigTemplate.objects.count() in (before, before + 1)
    stored = ConfigTemplate.objects.filter(template_id="fuzz-cli").order_by("-version").first()
    assert stored is not None
    assert not _nonfinite(stored.config_body), "a non-finite number was stored"
    assert out.getvalue().startswith(("created ", "unchanged "))


@pytest.mark.django_db
def test_infinite_model_price_is_a_clear_error(tmp_path: Path) -> None:
    """Found by the fuzzer: ``.inf`` as a price of a model the spec uses.

    ``ModelInfo.input_price_per_mtok = Field(ge=0)`` accepts +inf, so ``parse_spec`` accepts
    the body, and ``sha256_canonical`` then raises ``ValueError`` ("non-finite number inf
    cannot be signed"): ``configs import`` dies with a traceback instead of a clear error.
    """
    path = tmp_path / "inf.yaml"
    path.write_text(
        "template_id: inf-price\n"
        "spec:\n"
        "  models:\n"
        "    gpt-x: {provider: openai, provider_model: gpt-x, input_price_per_mtok: .inf,"
        " output_price_per_mtok: 1.0}\n"
        "  rubric: {model: gpt-x, scale_size: 4, concept: fascism}\n"
        "  scoring: {model: gpt-x}\n"
        "  sample_count: 1\n"
        "  evidence: {pool_tag: p}\n",
        encoding="utf-8",
    )
    with pytest.raises(CommandError) as info:
        call_command("configs", "import", str(path), stdout=io.StringIO())
    assert "spec.models.gpt-x.input_price_per_mtok" in str(info.value)
    assert ConfigTemplate.objects.count() == 0


@pytest.mark.django_db
def test_nul_character_in_a_config_string_is_a_clear_error(tmp_path: Path) -> None:
    """Found by the fuzzer: a NUL (``"\\0"`` in YAML, ``"\\u0000"`` in JSON) in any string.

    The spec validators accept it, and PostgreSQL's jsonb cannot store ``\\u0000``: the
    import dies with ``DataError: unsupported Unicode escape sequence`` (a traceback)
    instead of naming the field and the fix.
    """
    path = tmp_path / "nul.yaml"
    path.write_text(
        "template_id: nul-concept\n"
        "spec:\n"
        '  rubric: {model: gpt-4.1-mini, scale_size: 4, concept: "fas\\0cism"}\n'
        "  scoring: {model: gpt-4.1-mini}\n"
        "  sample_count: 1\n"
        "  evidence: {pool_tag: p}\n",
        encoding="utf-8",
    )
    with pytest.raises(CommandError) as info:
        call_command("configs", "import", str(path), stdout=io.StringIO())
    assert "spec.rubric.concept" in str(info.value)
    assert ConfigTemplate.objects.count() == 0


def test_deleted_model_table_is_reported_at_the_reference() -> None:
    """Regression (found by ``test_template_documents``): deleting ``models`` while
    ``scoring.model`` names one of its entries is reported at the reference, with a fix that
    names ``models``; the oracle counts that as naming the mutation."""
    spec = {
        "rubric": {"model": "gpt-4.1-mini", "scale_size": 4, "concept": "fascism"},
        "scoring": {"model": "gpt-x", "method": "subset", "evidence_view": "l2_neutralized"},
        "sample_count": 10,
        "evidence": {"pool_tag": "demo-pool"},
    }
    with pytest.raises(SpecError) as info:
        document_from_data({"template_id": "fuzz-t", "spec": spec}, source="fuzz.yaml")
    issues = info.value.issues
    assert [i["path"] for i in issues] == ["spec.scoring.model"]
    _assert_clear(info.value, Mutated(doc=spec, paths=["models"], kinds=["delete"]), prefix="spec.")
    with pytest.raises(AssertionError, match="no issue names a mutated field"):
        _assert_clear(info.value, Mutated(doc=spec, paths=["sample_count"], kinds=["delete"]))
