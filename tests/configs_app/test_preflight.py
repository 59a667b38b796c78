"""Preflight: which credentials a spec needs and when each counts as satisfied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from configs_app.preflight import (
    PreflightError,
    preflight_check,
    preflight_for_spec,
    requirements_for_spec,
)
from configs_app.spec import SpecError, parse_spec

NO_PROVIDERS = {
    "OPENAI_API_KEY": None,
    "ANTHROPIC_API_KEY": None,
    "FIRECRAWL_API_KEY": None,
    "OPENAI_BASE_URL": None,
    "ANTHROPIC_BASE_URL": None,
    "FIRECRAWL_API_URL": None,
    "JUDGE_SIMULATOR_URL": None,
}
ALL_KEYS = ["ANTHROPIC_API_KEY", "FIRECRAWL_API_KEY", "OPENAI_API_KEY"]


def test_requirements_follow_providers_and_windows(body: dict[str, Any]) -> None:
    assert requirements_for_spec(body) == ["OPENAI_API_KEY"]
    body["rubric"]["model"] = "claude-sonnet-4.5"
    assert requirements_for_spec(parse_spec(body)) == ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
    body["scoring"]["model"] = "claude-sonnet-4.5"
    body["evidence"] = {"pool_tag": "p", "window_tags": ["w1"]}
    assert requirements_for_spec(body) == ["ANTHROPIC_API_KEY", "FIRECRAWL_API_KEY"]
    # A model added under `models` counts by its provider.
    body["models"] = {
        "house-gpt": {
            "provider": "openai",
            "provider_model": "ft:gpt-4.1:house",
            "input_price_per_mtok": 1,
            "output_price_per_mtok": 1,
        }
    }
    body["scoring"]["model"] = "house-gpt"
    assert "OPENAI_API_KEY" in requirements_for_spec(body)


def test_requirements_reject_invalid_spec(body: dict[str, Any]) -> None:
    body["scoring"]["model"] = "gpt-0"
    with pytest.raises(SpecError):
        requirements_for_spec(body)


@override_settings(**NO_PROVIDERS)
def test_missing_keys_have_reason_and_fix(body: dict[str, Any]) -> None:
    result = preflight_check(ALL_KEYS)
    assert not result.ok
    assert [m.name for m in result.missing] == ALL_KEYS
    for missing in result.missing:
        assert f"{missing.name} is not set" in missing.reason
        assert f"set {missing.name} in the environment" in missing.fix
        assert f"{missing.name}_FILE" in missing.fix
        assert ".env.example" in missing.fix
        assert "JUDGE_SIMULATOR_URL" in missing.fix
    with pytest.raises(PreflightError) as info:
        result.raise_if_missing()
    assert [m.name for m in info.value.missing] == ALL_KEYS
    assert info.value.as_issues()[0]["path"] == "ANTHROPIC_API_KEY"
    detailed = preflight_for_spec(body)
    assert "needed by rubric.model=gpt-4.1-mini" in detailed.missing[0].reason


@override_settings(**{**NO_PROVIDERS, "OPENAI_API_KEY": "sk-from-env"})
def test_satisfied_by_setting() -> None:
    result = preflight_check(["OPENAI_API_KEY", "ANTHROPIC_API_KEY"])
    assert [s.name for s in result.satisfied] == ["OPENAI_API_KEY"]
    assert [m.name for m in result.missing] == ["ANTHROPIC_API_KEY"]


def test_satisfied_by_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read NAME_FILE; preflight trusts the setting, so a file-provided key counts."""
    from judge_project.env import env_str

    key_file = tmp_path / "openai"
    key_file.write_text("sk-file\n")
    monkeypatch.setenv("OPENAI_API_KEY_FILE", str(key_file))
    with override_settings(**{**NO_PROVIDERS, "OPENAI_API_KEY": env_str("OPENAI_API_KEY")}):
        assert preflight_check(["OPENAI_API_KEY"]).ok


@override_settings(**{**NO_PROVIDERS, "JUDGE_SIMULATOR_URL": "http://sim.internal:9000"})
def test_simulator_url_satisfies_every_provider_key() -> None:
    result = preflight_check(ALL_KEYS)
    assert result.ok
    assert all("JUDGE_SIMULATOR_URL" in s.via for s in result.satisfied)


@override_settings(**{**NO_PROVIDERS, "JUDGE_SIMULATOR_URL": "http://127.0.0.1:9000"})
def test_simulator_does_not_satisfy_unknown_settings() -> None:
    result = preflight_check(["SOME_OTHER_SECRET"])
    assert [m.name for m in result.missing] == ["SOME_OTHER_SECRET"]


@pytest.mark.parametrize(
    ("setting", "key", "url", "ok"),
    [
        ("OPENAI_BASE_URL", "OPENAI_API_KEY", "http://127.0.0.1:8765/v1", True),
        ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "http://localhost:8765", True),
        ("FIRECRAWL_API_URL", "FIRECRAWL_API_KEY", "http://[::1]:8765", True),
        ("OPENAI_BASE_URL", "OPENAI_API_KEY", "http://127.8.0.1:1", True),
        ("OPENAI_BASE_URL", "OPENAI_API_KEY", "https://api.openai.com/v1", False),
        ("OPENAI_BASE_URL", "OPENAI_API_KEY", "http://10.0.0.5:8765", False),
        ("OPENAI_BASE_URL", "OPENAI_API_KEY", "http://localhost.evil.com", False),
        ("ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "http://127.0.0.1:8765", False),
    ],
)
def test_loopback_base_url_means_local_simulator(
    setting: str, key: str, url: str, ok: bool
) -> None:
    with override_settings(**{**NO_PROVIDERS, setting: url}):
        result = preflight_check([key])
    assert result.ok is ok
    if ok:
        assert "local simulator" in result.satisfied[0].via
