"""ExperimentSpec validation, normalization, secrets refusal and spec_signature stability."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from configs_app.registry import DEFAULT_MODELS
from configs_app.spec import (
    LEGACY_EVIDENCE_VIEWS,
    RANDOMIZATIONS,
    SpecError,
    SpecIssue,
    canonical_json,
    find_secrets,
    normalize_spec,
    ordered_like_spec,
    parse_spec,
    spec_signature,
)
from tests.configs_app.helpers import DEMO_BODY

PROJECT_DIR = Path(__file__).resolve().parents[2]


def issue_at(exc: SpecError, path: str) -> SpecIssue:
    matches = [issue for issue in exc.issues if issue["path"] == path]
    assert matches, f"no issue at {path!r}; got {exc.issues}"
    return matches[0]


# --- normalization -----------------------------------------------------------------------------


def test_normalized_body_fills_defaults_and_pins_models(body: dict[str, Any]) -> None:
    normalized = normalize_spec(body)
    assert normalized["scoring"]["bundle_strategy_version"] == "v1"
    assert normalized["max_output_tokens"] == 8000
    assert normalized["pause_after"] is None
    assert normalized["evidence"] == {
        "pool_tag": "demo-pool",
        "window_tags": [],
        "bundle_plan_tag": None,
    }
    assert normalized["models"] == {
        "gpt-4.1-mini": DEFAULT_MODELS["gpt-4.1-mini"].model_dump(mode="json")
    }
    # Normalizing is idempotent, and a body with defaults written out hashes the same.
    assert normalize_spec(normalized) == normalized
    assert spec_signature(normalized) == spec_signature(body)


def test_lab_defaults_apply_when_omitted() -> None:
    spec = parse_spec(
        {
            "rubric": {"model": "gpt-4.1", "scale_size": 5, "concept": "fascism"},
            "scoring": {"model": "gpt-4.1"},
            "sample_count": 1,
            "evidence": {"window_tags": ["w1"]},
        }
    )
    assert spec.scoring.method == "single"
    assert spec.scoring.evidence_view == "l0_raw"
    assert spec.scoring.abstain_enabled is False
    assert spec.scoring.randomizations == []
    assert spec.scoring.evidence_bundle_size == 1


def test_randomizations_sorted_and_order_irrelevant(body: dict[str, Any]) -> None:
    reordered = copy.deepcopy(body)
    reordered["scoring"]["randomizations"] = list(reversed(RANDOMIZATIONS))
    assert normalize_spec(reordered)["scoring"]["randomizations"] == sorted(RANDOMIZATIONS)
    assert spec_signature(reordered) == spec_signature(body)


def test_duplicate_randomizations_rejected(body: dict[str, Any]) -> None:
    body["scoring"]["randomizations"] = ["hide_label_text", "hide_label_text"]
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue = issue_at(info.value, "scoring.randomizations")
    assert "hide_label_text" in issue["message"]
    assert "at most once" in issue["fix"]


@pytest.mark.parametrize(("legacy", "modern"), sorted(LEGACY_EVIDENCE_VIEWS.items()))
def test_legacy_view_normalized_and_hashed_as_modern(
    body: dict[str, Any], legacy: str, modern: str
) -> None:
    legacy_body = copy.deepcopy(body)
    legacy_body["scoring"]["evidence_view"] = legacy
    body["scoring"]["evidence_view"] = modern
    normalized = normalize_spec(legacy_body)
    assert normalized["scoring"]["evidence_view"] == modern
    assert f'"{legacy}"' not in json.dumps(normalized)
    assert spec_signature(legacy_body) == spec_signature(body)


def test_bad_evidence_view_lists_allowed_values(body: dict[str, Any]) -> None:
    body["scoring"]["evidence_view"] = "l9_imaginary"
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue = issue_at(info.value, "scoring.evidence_view")
    assert "l2_neutralized" in issue["fix"]


@pytest.mark.parametrize("evidence", [{}, {"window_tags": []}, {"bundle_plan_tag": "b"}])
def test_evidence_reference_required(body: dict[str, Any], evidence: dict[str, Any]) -> None:
    body["evidence"] = evidence
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue = issue_at(info.value, "evidence")
    assert "pool_tag" in issue["message"]
    assert "window_tags" in issue["fix"]


def test_missing_evidence_key(body: dict[str, Any]) -> None:
    del body["evidence"]
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    assert "pool_tag" in issue_at(info.value, "evidence")["fix"]


def test_window_tags_alone_are_enough(body: dict[str, Any]) -> None:
    body["evidence"] = {"window_tags": ["us-2024", "hu-2022"], "bundle_plan_tag": "plan-a"}
    normalized = normalize_spec(body)
    assert normalized["evidence"]["window_tags"] == ["us-2024", "hu-2022"]
    assert normalized["evidence"]["pool_tag"] is None


def test_duplicate_window_tags_rejected(body: dict[str, Any]) -> None:
    body["evidence"] = {"window_tags": ["a", "a"]}
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue_at(info.value, "evidence.window_tags")


def test_unknown_model_names_field_and_known_ids(body: dict[str, Any]) -> None:
    body["scoring"]["model"] = "gpt-9"
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue = issue_at(info.value, "scoring.model")
    assert "gpt-9" in issue["message"]
    for known in DEFAULT_MODELS:
        assert known in issue["message"]
    assert "models" in issue["fix"]


def test_models_add_and_override_entries(body: dict[str, Any]) -> None:
    custom = {
        "provider": "anthropic",
        "provider_model": "claude-custom-1",
        "input_price_per_mtok": 1,
        "output_price_per_mtok": 2.5,
    }
    override = DEFAULT_MODELS["gpt-4.1-mini"].model_dump() | {"provider_model": "gpt-4.1-mini-x"}
    body["rubric"]["model"] = "my-claude"
    body["models"] = {
        "my-claude": custom,
        "gpt-4.1-mini": override,
        "unused-model": custom,
    }
    spec = parse_spec(body)
    resolved = spec.resolved_models()
    assert sorted(resolved) == ["gpt-4.1-mini", "my-claude"]
    assert resolved["gpt-4.1-mini"].provider_model == "gpt-4.1-mini-x"
    assert resolved["my-claude"].provider == "anthropic"
    # Only the entries in use are stored, so an unused override does not move the signature.
    assert sorted(normalize_spec(body)["models"]) == ["gpt-4.1-mini", "my-claude"]
    del body["models"]["unused-model"]
    signature = spec_signature(body)
    # Changing the provider model id changes what runs, hence the signature.
    body["models"]["gpt-4.1-mini"]["provider_model"] = "gpt-4.1-mini-y"
    assert spec_signature(body) != signature


def test_bad_model_entry_has_path(body: dict[str, Any]) -> None:
    body["models"] = {
        "gpt-4.1-mini": {
            "provider": "openai",
            "provider_model": "x",
            "input_price_per_mtok": "cheap",
            "output_price_per_mtok": 1,
        }
    }
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue_at(info.value, "models.gpt-4.1-mini.input_price_per_mtok")


def test_unknown_field_rejected_with_allowed_list(body: dict[str, Any]) -> None:
    body["scoring"]["abstain_enable"] = True  # typo
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue = issue_at(info.value, "scoring.abstain_enable")
    assert "abstain_enabled" in issue["fix"]


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("rubric", "scale_size", 1),
        ("rubric", "scale_size", 13),
        ("rubric", "scale_size", "5"),
        ("rubric", "concept", ""),
        ("rubric", "concept", "   "),
        ("scoring", "abstain_enabled", "yes"),
        ("scoring", "method", "multi"),
        ("scoring", "evidence_bundle_size", 0),
        ("scoring", "bundle_strategy", "kmeans"),
        (None, "sample_count", 0),
        (None, "sample_count", 100_001),
        (None, "pause_after", "score"),
    ],
)
def test_field_constraints(
    body: dict[str, Any], section: str | None, field: str, value: Any
) -> None:
    target = body[section] if section else body
    target[field] = value
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    path = f"{section}.{field}" if section else field
    issue = issue_at(info.value, path)
    assert issue["fix"]
    assert issue["message"]


def test_valid_edge_values(body: dict[str, Any]) -> None:
    body["rubric"]["scale_size"] = 12
    body["sample_count"] = 100_000
    body["pause_after"] = "rubric_critic"
    body["scoring"]["bundle_strategy"] = "semantic_cluster_projected"
    assert normalize_spec(body)["pause_after"] == "rubric_critic"


def test_non_mapping_body() -> None:
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_spec(["not", "a", "spec"])


def test_error_message_renders_path_and_fix(body: dict[str, Any]) -> None:
    body["scoring"]["evidence_view"] = "nope"
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    text = str(info.value.with_source("x.yaml").prefixed("spec"))
    assert text.startswith("x.yaml: spec.scoring.evidence_view:")
    assert "fix:" in text


def test_ordered_like_spec_only_reorders(body: dict[str, Any]) -> None:
    normalized = normalize_spec(body)
    shuffled = _reverse_keys(normalized)
    shuffled["zz_unknown"] = {"b": 1, "a": 2}
    ordered = ordered_like_spec(shuffled)
    assert ordered == shuffled
    assert list(ordered)[:3] == ["models", "rubric", "scoring"]
    assert list(ordered)[-1] == "zz_unknown"
    assert list(ordered["evidence"]) == ["pool_tag", "window_tags", "bundle_plan_tag"]
    assert list(ordered["zz_unknown"]) == ["a", "b"]  # unknown subtrees: sorted keys


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "API-KEY",
        "apikey",
        "OPENAI_API_KEY",
        "token",
        "auth_token",
        "secret",
        "client_secret",
        "password",
        "Authorization",
        "access_key",
        "accessKey",
        "aws-access-key",
    ],
)
def test_secret_named_keys_refused_at_any_depth(body: dict[str, Any], key: str) -> None:
    body["scoring"]["extra"] = {"deep": [{key: "value"}]}
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue = issue_at(info.value, f"scoring.extra.deep[0].{key}")
    assert "environment" in issue["fix"]
    assert ".env.example" in issue["fix"]


@pytest.mark.parametrize(
    "value",
    [
        "sk-" + "a1B2" * 6,
        "sk-ant-api03-" + "x" * 30,
        "fc-" + "0123456789abcdef" * 2,
        "Bearer eyJhbGciOiJIUzI1NiJ9.payload",
        "fascism (key sk-proj-" + "Z" * 24 + ")",
    ],
)
def test_key_looking_values_refused_without_echo(body: dict[str, Any], value: str) -> None:
    body["rubric"]["concept"] = value
    with pytest.raises(SpecError) as info:
        parse_spec(body)
    issue = issue_at(info.value, "rubric.concept")
    assert "API key" in issue["message"]
    assert value not in str(info.value)


@pytest.mark.parametrize(
    "value", ["fascism", "risk-averse-authoritarianism-concept", "sk-short", "fc-1", "Bearer"]
)
def test_ordinary_values_pass(body: dict[str, Any], value: str) -> None:
    body["rubric"]["concept"] = value
    assert normalize_spec(body)["rubric"]["concept"] == value


def test_token_counts_are_not_secrets(body: dict[str, Any]) -> None:
    body["max_output_tokens"] = 4000
    assert find_secrets(body) == []
    assert normalize_spec(body)["max_output_tokens"] == 4000


# --- canonical JSON and signature --------------------------------------------------------------


def test_canonical_json_format() -> None:
    value = {"b": [1, 2.5, 8000.0, -0.0, True, None], "a": "é\n", "c": {"z": 0.1, "y": 1e-7}}
    assert canonical_json(value) == (
        '{"a":"\\u00e9\\n","b":[1,2.5,8000,0,true,null],"c":{"y":1e-07,"z":0.1}}'
    )
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError):
        canonical_json({"x": {1, 2}})
    with pytest.raises(TypeError):
        canonical_json({1: "non-string key"})


# A spec whose only model is declared inline, so the value depends only on the canonical form
# and the schema's defaults, not on DEFAULT_MODELS. If this changes, every stored signature
# changes meaning: bump schema_version instead.
GOLDEN_BODY: dict[str, Any] = {
    "models": {
        "golden": {
            "provider": "openai",
            "provider_model": "golden-2025",
            "batchable": False,
            "input_price_per_mtok": 0.15,
            "output_price_per_mtok": 0.6,
        }
    },
    "rubric": {"model": "golden", "scale_size": 7, "concept": "illiberal démocratie"},
    "scoring": {
        "model": "golden",
        "method": "subset",
        "abstain_enabled": True,
        "evidence_view": "abstracted",
        "randomizations": ["shuffle_rubric_order", "anonymize_stages"],
        "evidence_bundle_size": 3,
        "bundle_strategy": "semantic_cluster",
        "clustering_seed": 7,
    },
    "sample_count": 30,
    "evidence": {"pool_tag": "p", "window_tags": ["w2", "w1"]},
    "pause_after": "rubric_critic",
}
GOLDEN_CANONICAL = (
    '{"evidence":{"bundle_plan_tag":null,"pool_tag":"p","window_tags":["w2","w1"]},"m'
    'ax_output_tokens":8000,"models":{"golden":{"batch_discount":0.5,"batchable":fals'
    'e,"input_price_per_mtok":0.15,"output_price_per_mtok":0.6,"provider":"openai","p'
    'rovider_model":"golden-2025"}},"pause_after":"rubric_critic","rubric":{"concept"'
    ':"illiberal d\\u00e9mocratie","model":"golden","scale_size":7},"sample_count":30,'
    '"scoring":{"abstain_enabled":true,"bundle_strategy":"semantic_cluster","bundle_s'
    'trategy_version":"v1","clustering_seed":7,"evidence_bundle_size":3,"evidence_vie'
    'w":"l3_abstracted","method":"subset","model":"golden","randomizations":["anonymi'
    'ze_stages","shuffle_rubric_order"]}}'
)
GOLDEN_SIGNATURE = "5d3d2b34dd0100f2d01e6209d5763f52c52493c837afb08c40d4b48257b68184"


def test_signature_golden_value() -> None:
    assert canonical_json(normalize_spec(GOLDEN_BODY)) == GOLDEN_CANONICAL
    assert hashlib.sha256(GOLDEN_CANONICAL.encode()).hexdigest() == GOLDEN_SIGNATURE
    assert spec_signature(GOLDEN_BODY) == GOLDEN_SIGNATURE


def test_signature_identical_in_other_processes() -> None:
    """Same digest from fresh interpreters with different hash seeds (dict/set ordering)."""
    bodies = [GOLDEN_BODY, DEMO_BODY]
    expected = [spec_signature(b) for b in bodies]
    script = (
        "import json, sys\n"
        "from configs_app.spec import spec_signature\n"
        "print(json.dumps([spec_signature(b) for b in json.load(sys.stdin)]))\n"
    )
    for seed in ("0", "1", "4242"):
        # Reverse every mapping's key order on the way in: insertion order must not matter.
        payload = json.dumps([_reverse_keys(b) for b in bodies])
        completed = subprocess.run(
            [sys.executable, "-c", script],
            input=payload,
            capture_output=True,
            text=True,
            cwd=PROJECT_DIR,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(PROJECT_DIR)},
            check=True,
            timeout=60,
        )
        assert json.loads(completed.stdout) == expected


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


@settings(max_examples=60, deadline=None)
@given(
    scale=st.integers(2, 12),
    samples=st.integers(1, 100_000),
    view=st.sampled_from(
        ["l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted", *LEGACY_EVIDENCE_VIEWS]
    ),
    randomizations=st.lists(st.sampled_from(RANDOMIZATIONS), unique=True),
    bundle=st.integers(1, 50),
    seed=st.none() | st.integers(-(2**31), 2**31),
    tokens=st.integers(1, 1_000_000),
    # NUL is refused with its own clear error (it cannot be stored); see test_fuzz configs.
    concept=st.text(
        alphabet=st.characters(blacklist_characters="\x00"), min_size=1, max_size=40
    ).filter(str.strip),
)
def test_normalization_idempotent_and_order_free(
    scale: int,
    samples: int,
    view: str,
    randomizations: list[str],
    bundle: int,
    seed: int | None,
    tokens: int,
    concept: str,
) -> None:
    body = copy.deepcopy(DEMO_BODY)
    body["rubric"].update(scale_size=scale, concept=concept)
    body["scoring"].update(
        evidence_view=view,
        randomizations=randomizations,
        evidence_bundle_size=bundle,
        clustering_seed=seed,
    )
    body.update(sample_count=samples, max_output_tokens=tokens)
    assume(not find_secrets({"concept": concept}))  # a key-looking concept is refused
    normalized = normalize_spec(body)
    assert normalize_spec(normalized) == normalized
    assert spec_signature(_reverse_keys(body)) == spec_signature(normalized)
    shuffled = copy.deepcopy(body)
    shuffled["scoring"]["randomizations"] = list(reversed(randomizations))
    assert spec_signature(shuffled) == spec_signature(body)
