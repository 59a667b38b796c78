"""Admin: the effective-policy preview and form validation, through the Django test client."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from policies.admin import PolicyAdmin
from policies.models import Policy
from policies.resolver import POLICY_FIELDS

EFFECTIVE_URL = "/admin/policies/policy/effective/"


@pytest.fixture
def rows(no_policies: None) -> None:
    Policy.objects.create(
        scope="global", key="default", requests_per_minute=100, max_batch_size=500
    )
    Policy.objects.create(scope="model", key="gpt-4.1", requests_per_minute=70)
    Policy.objects.create(scope="experiment", key="exp-1", token_budget=5000)


def _row(html: str, field: str) -> str:
    match = re.search(rf'<tr[^>]*data-field="{field}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no row for {field}"
    return match.group(1)


def _cell(row: str, css: str) -> str:
    match = re.search(rf'<td class="{css}">(.*?)</td>', row, re.S)
    assert match, css
    return match.group(1).strip()


def test_preview_shows_values_and_provenance(admin_client: Client, rows: None) -> None:
    assert reverse("admin:policies_policy_effective") == EFFECTIVE_URL
    response = admin_client.get(
        EFFECTIVE_URL,
        {"team": "acme", "provider": "openai", "model": "gpt-4.1", "experiment": "exp-1"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    rpm = _row(html, "requests_per_minute")
    assert (_cell(rpm, "value"), _cell(rpm, "scope"), _cell(rpm, "key")) == (
        "70",
        "model",
        "gpt-4.1",
    )
    assert _cell(rpm, "bucket") == "model:gpt-4.1"
    budget = _row(html, "token_budget")
    assert (_cell(budget, "value"), _cell(budget, "scope")) == ("5000", "experiment")
    size = _row(html, "max_batch_size")
    assert (_cell(size, "value"), _cell(size, "scope"), _cell(size, "key")) == (
        "500",
        "global",
        "default",
    )
    cap = _row(html, "output_token_cap")
    assert "unset" in _cell(cap, "value")
    assert len(re.findall(r"data-field=", html)) == len(POLICY_FIELDS)


def test_preview_without_input_shows_only_the_form(admin_client: Client, rows: None) -> None:
    response = admin_client.get(EFFECTIVE_URL)
    assert response.status_code == 200
    assert b"effective-policy" not in response.content
    assert b'name="model"' in response.content


def test_preview_rejects_unknown_provider_choice(admin_client: Client, rows: None) -> None:
    response = admin_client.get(EFFECTIVE_URL, {"provider": "azure"})
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content
    assert b"effective-policy" not in response.content


def test_preview_needs_staff(client: Client, rows: None) -> None:
    response = client.get(EFFECTIVE_URL)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_preview_needs_view_permission(client: Client, rows: None) -> None:
    User.objects.create_user("staff", password="pw", is_staff=True)
    client.login(username="staff", password="pw")
    assert client.get(EFFECTIVE_URL).status_code == 403


def test_changelist_links_to_preview(admin_client: Client, rows: None) -> None:
    response = admin_client.get("/admin/policies/policy/")
    assert response.status_code == 200
    assert f'href="{EFFECTIVE_URL}"'.encode() in response.content
    assert b"?scope__exact=model" in response.content  # list filter by scope


def _form(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"scope": "model", "key": "gpt-4.1", "notes": ""}
    data.update(dict.fromkeys(POLICY_FIELDS, ""))
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_batch_size": "600", "max_batch_size": "500"}, "exceeds max_batch_size"),
        ({"retry_jitter_ratio": "1.5"}, "less than or equal to 1"),
        ({"requests_per_minute": "0"}, "greater than or equal to 1"),
        ({"scope": "provider", "key": "azure"}, "Unknown provider"),
        ({"scope": "global", "key": "acme"}, "empty or &#x27;default&#x27;"),
    ],
)
def test_admin_form_rejects_invalid_policy(
    admin_client: Client, no_policies: None, overrides: dict[str, Any], message: str
) -> None:
    response = admin_client.post("/admin/policies/policy/add/", _form(**overrides))
    assert response.status_code == 200  # re-rendered with errors, not saved
    assert message in response.content.decode()
    assert b"errornote" in response.content
    assert not Policy.objects.exists()


def test_admin_form_saves_valid_policy(admin_client: Client, no_policies: None) -> None:
    response = admin_client.post(
        "/admin/policies/policy/add/",
        _form(requests_per_minute="70", batch_mode="force", dollar_budget="12.50"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row = Policy.objects.get()
    assert (row.scope, row.key, row.requests_per_minute, row.batch_mode) == (
        "model",
        "gpt-4.1",
        70,
        "force",
    )
    assert row.max_batch_size is None
    assert row.partial_failure_policy is None


def test_fieldsets_cover_every_field_once() -> None:
    names = [name for _, opts in PolicyAdmin.fieldsets for name in opts["fields"]]  # type: ignore[union-attr]
    policy_names = [name for name in names if name in POLICY_FIELDS]
    assert sorted(policy_names) == sorted(POLICY_FIELDS)
    assert len(policy_names) == len(set(policy_names))
