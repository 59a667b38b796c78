"""Policy validation: database CheckConstraints and clean() messages; the seeded global row."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from policies.models import POLICY_FIELDS, Policy, Team

BAD_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("zero rpm", {"scope": "model", "key": "m", "requests_per_minute": 0}),
    ("zero input tpm", {"scope": "model", "key": "m", "input_tokens_per_minute": 0}),
    ("zero batch size", {"scope": "model", "key": "m", "max_batch_size": 0}),
    ("zero attempts", {"scope": "model", "key": "m", "max_request_attempts": 0}),
    ("zero direct concurrency", {"scope": "model", "key": "m", "direct_concurrency": 0}),
    ("jitter above 1", {"scope": "model", "key": "m", "retry_jitter_ratio": 1.5}),
    ("jitter below 0", {"scope": "model", "key": "m", "retry_jitter_ratio": -0.1}),
    ("min over max", {"scope": "model", "key": "m", "min_batch_size": 600, "max_batch_size": 500}),
    ("zero dollars", {"scope": "model", "key": "m", "dollar_budget": Decimal("0")}),
    ("negative dollars", {"scope": "model", "key": "m", "dollar_budget": Decimal("-1")}),
    ("bad batch mode", {"scope": "model", "key": "m", "batch_mode": "sometimes"}),
    ("bad failure policy", {"scope": "model", "key": "m", "partial_failure_policy": "shrug"}),
    ("bad scope", {"scope": "planet", "key": "m"}),
    ("global with a key", {"scope": "global", "key": "acme"}),
    ("team without a key", {"scope": "team", "key": ""}),
]


@pytest.mark.parametrize(("label", "values"), BAD_ROWS, ids=[r[0] for r in BAD_ROWS])
def test_database_refuses_bad_rows(no_policies: None, label: str, values: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Policy.objects.create(**values)


@pytest.mark.parametrize(("label", "values"), BAD_ROWS, ids=[r[0] for r in BAD_ROWS])
def test_full_clean_refuses_bad_rows(no_policies: None, label: str, values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Policy(**values).full_clean()


def test_unique_scope_key(no_policies: None) -> None:
    Policy.objects.create(scope="model", key="gpt-4.1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Policy.objects.create(scope="model", key="gpt-4.1")
    Policy.objects.create(scope="experiment", key="gpt-4.1")  # other scope: fine


def test_single_global_row_whatever_its_key(no_policies: None) -> None:
    Policy.objects.create(scope="global", key="default")
    with pytest.raises(IntegrityError), transaction.atomic():
        Policy.objects.create(scope="global", key="")


def test_clean_messages_name_the_problem(no_policies: None) -> None:
    policy = Policy(scope="model", key="m", min_batch_size=600, max_batch_size=500)
    with pytest.raises(ValidationError) as info:
        policy.full_clean()
    assert "exceeds max_batch_size" in str(info.value.message_dict["min_batch_size"])

    policy = Policy(scope="model", key="m", retry_jitter_ratio=1.5)
    with pytest.raises(ValidationError) as info:
        policy.full_clean()
    assert "retry_jitter_ratio" in info.value.message_dict


@pytest.mark.parametrize(
    ("scope", "key", "message"),
    [
        ("provider", "azure", "Unknown provider"),
        ("team", "not a slug", "team's slug"),
        ("model", "", "needs a key"),
        ("model", "   ", "needs a key"),
        ("global", "acme", "empty or 'default'"),
    ],
)
def test_clean_validates_keys(no_policies: None, scope: str, key: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Policy(scope=scope, key=key).full_clean()
    assert message in " ".join(info.value.message_dict["key"])


def test_clean_normalizes_keys(no_policies: None) -> None:
    policy = Policy(scope="global", key="")
    policy.full_clean()
    assert policy.key == "default"
    policy = Policy(scope="model", key="  gpt-4.1 ")
    policy.full_clean()
    assert policy.key == "gpt-4.1"


def test_zero_is_allowed_where_meaningful(no_policies: None) -> None:
    policy = Policy(scope="model", key="m", max_batch_retries=0, retry_backoff_seconds=0)
    policy.full_clean()
    policy.save()


def test_seeded_global_defaults(db: None) -> None:
    """Migration 0002 seeded the global row with the documented engine defaults."""
    row = Policy.objects.get(scope="global")
    assert row.key == "default"
    expected = {
        "requests_per_minute": 10_000,
        "input_tokens_per_minute": 30_000_000,
        "output_tokens_per_minute": 30_000_000,
        "batch_enqueued_tokens": 90_000_000,
        "max_batch_size": 500,
        "min_batch_size": 30,
        "max_batch_bytes": 100 * 1024 * 1024,
        "max_concurrent_batches": 8,
        "poll_interval_seconds": 20,
        "max_request_attempts": 3,
        "max_batch_retries": 2,
        "retry_backoff_seconds": 60,
        "retry_jitter_ratio": 0.2,
        "request_timeout_seconds": 120,
        "direct_concurrency": 8,
        "batch_mode": "auto",
        "partial_failure_policy": "fail_run",
        "token_budget": None,
        "dollar_budget": None,
        "output_token_cap": 8000,
    }
    assert set(expected) == set(POLICY_FIELDS)
    assert {name: getattr(row, name) for name in POLICY_FIELDS} == expected
    assert row.max_batch_bytes is not None
    assert row.max_batch_bytes < 200 * 1000 * 1000
    row.full_clean()  # the defaults pass the model's own validation


def test_team_slug_unique(db: None) -> None:
    Team.objects.create(slug="acme", name="Acme")
    with pytest.raises(IntegrityError), transaction.atomic():
        Team.objects.create(slug="acme", name="Other")
