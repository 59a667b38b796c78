"""Precedence resolution: experiment > model > provider > team > global, field by field."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from policies.models import Policy
from policies.resolver import POLICY_FIELDS, EffectivePolicy, policy_resolve

ROWS: dict[tuple[str, str], dict[str, Any]] = {
    ("global", "default"): {
        "requests_per_minute": 100,
        "input_tokens_per_minute": 1000,
        "max_batch_size": 500,
        "min_batch_size": 30,
        "poll_interval_seconds": 20,
        "retry_jitter_ratio": 0.2,
        "batch_mode": "auto",
        "dollar_budget": Decimal("10.5000"),
    },
    ("team", "acme"): {"requests_per_minute": 90, "max_batch_size": 400},
    ("provider", "openai"): {"requests_per_minute": 80, "input_tokens_per_minute": 800},
    ("model", "gpt-4.1"): {"requests_per_minute": 70, "poll_interval_seconds": 10},
    ("experiment", "exp-1"): {"requests_per_minute": 60, "token_budget": 5000},
}

FULL: dict[str, str | None] = {
    "team": "acme",
    "provider": "openai",
    "model": "gpt-4.1",
    "experiment": "exp-1",
}
NONE: dict[str, str | None] = {"team": None, "provider": None, "model": None, "experiment": None}
UNKNOWN: dict[str, str | None] = {
    "team": "ghost",
    "provider": "anthropic",
    "model": "no-such-model",
    "experiment": "nope",
}

G, T, P, M, E = (
    ("global", "default"),
    ("team", "acme"),
    ("provider", "openai"),
    ("model", "gpt-4.1"),
    ("experiment", "exp-1"),
)

# (inputs, expected source row per field; None = unset everywhere)
CASES: list[tuple[str, dict[str, str | None], dict[str, tuple[str, str] | None]]] = [
    (
        "all scopes",
        FULL,
        {
            "requests_per_minute": E,
            "input_tokens_per_minute": P,
            "max_batch_size": T,
            "poll_interval_seconds": M,
            "token_budget": E,
            "dollar_budget": G,
            "output_token_cap": None,
        },
    ),
    (
        "no experiment",
        {**FULL, "experiment": None},
        {
            "requests_per_minute": M,
            "input_tokens_per_minute": P,
            "max_batch_size": T,
            "poll_interval_seconds": M,
            "token_budget": None,
            "dollar_budget": G,
        },
    ),
    (
        "no model",
        {**FULL, "model": None},
        {
            "requests_per_minute": E,
            "input_tokens_per_minute": P,
            "max_batch_size": T,
            "poll_interval_seconds": G,
            "token_budget": E,
        },
    ),
    (
        "no provider",
        {**FULL, "provider": None},
        {
            "requests_per_minute": E,
            "input_tokens_per_minute": G,
            "max_batch_size": T,
            "poll_interval_seconds": M,
        },
    ),
    (
        "no team",
        {**FULL, "team": None},
        {"requests_per_minute": E, "max_batch_size": G, "input_tokens_per_minute": P},
    ),
    (
        "only team",
        {**NONE, "team": "acme"},
        {"requests_per_minute": T, "max_batch_size": T, "input_tokens_per_minute": G},
    ),
    (
        "only provider",
        {**NONE, "provider": "openai"},
        {"requests_per_minute": P, "input_tokens_per_minute": P, "max_batch_size": G},
    ),
    (
        "empty strings skip scopes",
        {"team": "", "provider": " ", "model": "gpt-4.1", "experiment": ""},
        {"requests_per_minute": M, "poll_interval_seconds": M, "max_batch_size": G},
    ),
    (
        "nothing but global",
        NONE,
        {"requests_per_minute": G, "input_tokens_per_minute": G, "token_budget": None},
    ),
    (
        "unknown keys fall back to global",
        UNKNOWN,
        {"requests_per_minute": G, "max_batch_size": G, "poll_interval_seconds": G},
    ),
]


@pytest.fixture
def rows(no_policies: None) -> None:
    for (scope, key), values in ROWS.items():
        Policy.objects.create(scope=scope, key=key, **values)


@pytest.mark.parametrize(("label", "inputs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_precedence_table(
    rows: None,
    label: str,
    inputs: dict[str, str | None],
    expected: dict[str, tuple[str, str] | None],
) -> None:
    effective = policy_resolve(**inputs)
    for name, source in expected.items():
        if source is None:
            assert effective.value(name) is None, (label, name)
            assert effective.provenance[name] is None, (label, name)
        else:
            assert effective.value(name) == ROWS[source][name], (label, name)
            assert effective.provenance[name] == {"scope": source[0], "key": source[1]}, (
                label,
                name,
            )
    # Every field has a provenance entry, None exactly when the value is None.
    assert set(effective.provenance) == set(POLICY_FIELDS)
    for name in POLICY_FIELDS:
        assert (effective.value(name) is None) == (effective.provenance[name] is None)


def test_missing_global_row_is_not_an_error(no_policies: None) -> None:
    Policy.objects.create(scope="model", key="gpt-4.1", requests_per_minute=7)
    effective = policy_resolve(team="acme", provider="openai", model="gpt-4.1", experiment="x")
    assert effective.requests_per_minute == 7
    assert effective.provenance["requests_per_minute"] == {"scope": "model", "key": "gpt-4.1"}
    assert effective.max_batch_size is None
    assert effective.provenance["max_batch_size"] is None


def test_empty_table_resolves_to_all_none(no_policies: None) -> None:
    effective = policy_resolve(team=None, provider=None, model=None, experiment=None)
    assert all(effective.value(name) is None for name in POLICY_FIELDS)


def test_one_query_for_all_scopes(rows: None, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        policy_resolve(**FULL)


def test_global_key_spelled_empty_still_resolves(no_policies: None) -> None:
    Policy.objects.create(scope="global", key="", requests_per_minute=5)
    effective = policy_resolve(team=None, provider=None, model=None, experiment=None)
    assert effective.requests_per_minute == 5
    assert effective.bucket_owner("requests_per_minute") == "global"


def test_bucket_owner_follows_provenance(rows: None) -> None:
    effective = policy_resolve(**FULL)
    assert effective.bucket_owner("requests_per_minute") == "experiment:exp-1"
    assert effective.bucket_owner("input_tokens_per_minute") == "provider:openai"
    assert effective.bucket_owner("poll_interval_seconds") == "model:gpt-4.1"
    assert effective.bucket_owner("dollar_budget") == "global"
    with pytest.raises(LookupError, match="output_token_cap"):
        effective.bucket_owner("output_token_cap")
    with pytest.raises(KeyError):
        effective.bucket_owner("not_a_field")


def test_json_round_trip(rows: None) -> None:
    effective = policy_resolve(**FULL)
    frozen = json.loads(json.dumps(effective.to_json()))
    assert frozen["fields"]["dollar_budget"] == {
        "value": "10.5000",
        "scope": "global",
        "key": "default",
    }
    assert frozen["fields"]["output_token_cap"] == {"value": None, "scope": None, "key": None}
    assert list(frozen["fields"]) == list(POLICY_FIELDS)
    restored = EffectivePolicy.from_json(frozen)
    assert restored == effective
    assert isinstance(restored.dollar_budget, Decimal)
    assert restored.to_json() == effective.to_json()


def test_from_json_tolerates_missing_and_unknown_fields() -> None:
    restored = EffectivePolicy.from_json(
        {
            "fields": {
                "requests_per_minute": {"value": 5, "scope": "model", "key": "m"},
                "field_from_the_future": {"value": 1, "scope": "global", "key": "default"},
            }
        }
    )
    assert restored.requests_per_minute == 5
    assert restored.bucket_owner("requests_per_minute") == "model:m"
    assert restored.max_batch_size is None


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"fields": []},
        {"fields": {"requests_per_minute": {"value": "5", "scope": "model", "key": "m"}}},
        {"fields": {"requests_per_minute": {"value": True, "scope": "model", "key": "m"}}},
        {"fields": {"batch_mode": {"value": "sometimes", "scope": "global", "key": "default"}}},
        {"fields": {"dollar_budget": {"value": "ten", "scope": "global", "key": "default"}}},
        {"fields": {"retry_jitter_ratio": {"value": "x", "scope": "global", "key": "default"}}},
        {"fields": {"requests_per_minute": {"value": 5, "scope": "planet", "key": "m"}}},
        {"fields": {"requests_per_minute": 5}},
    ],
)
def test_from_json_rejects_bad_shapes(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (messages vary per shape)
        EffectivePolicy.from_json(bad)


def test_problems_flag_cross_scope_min_over_max(no_policies: None) -> None:
    Policy.objects.create(scope="global", key="default", max_batch_size=100)
    Policy.objects.create(scope="experiment", key="big", min_batch_size=200)
    effective = policy_resolve(team=None, provider=None, model=None, experiment="big")
    assert effective.problems()
    assert "experiment:big" in effective.problems()[0]
    assert policy_resolve(team=None, provider=None, model=None, experiment=None).problems() == []
