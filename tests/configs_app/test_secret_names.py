"""Field names decide by their head word: budgets and token counts are not credentials."""

from __future__ import annotations

import pytest

from configs_app.spec import find_secrets


@pytest.mark.parametrize(
    "key", ["token_budget", "max_output_tokens", "input_tokens_per_minute", "secret_rotation_days"]
)
def test_not_secret(key: str) -> None:
    assert find_secrets({key: 5}) == []


@pytest.mark.parametrize(
    "key", ["api_key", "apiKey", "OPENAI_API_KEY", "auth_token", "token", "password", "access-key"]
)
def test_secret(key: str) -> None:
    issues = find_secrets({"x": {key: "v"}})
    assert [i["path"] for i in issues] == [f"x.{key}"]
