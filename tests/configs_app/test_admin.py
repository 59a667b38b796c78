"""Admin authoring through the Django test client, as a superuser."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from configs_app.models import ConfigTemplate, RunConfig
from configs_app.services import run_config_create, template_create

pytestmark = pytest.mark.django_db

ADD_URL = "admin:configs_app_configtemplate_add"
CHANGE_URL = "admin:configs_app_configtemplate_change"


def change_url(template: ConfigTemplate) -> str:
    return reverse(CHANGE_URL, args=[template.pk])


def test_add_page_creates_version_1(admin_client: Client, body: dict[str, Any]) -> None:
    assert admin_client.get(reverse(ADD_URL)).status_code == 200
    response = admin_client.post(
        reverse(ADD_URL),
        {"template_id": "adm", "config_body": json.dumps(body), "notes": "hello", "_save": "1"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    template = ConfigTemplate.objects.get()
    assert (template.template_id, template.version, template.notes) == ("adm", 1, "hello")
    assert template.created_by == "admin"
    assert template.config_body["scoring"]["bundle_strategy_version"] == "v1"  # normalized


def test_add_with_existing_id_creates_next_version(
    admin_client: Client, body: dict[str, Any]
) -> None:
    template_create(template_id="adm", body=body)
    body["sample_count"] = 3
    response = admin_client.post(
        reverse(ADD_URL), {"template_id": "adm", "config_body": json.dumps(body), "notes": ""}
    )
    assert response.status_code == 302
    assert sorted(ConfigTemplate.objects.values_list("version", flat=True)) == [1, 2]


def test_add_invalid_body_shows_path_and_fix(admin_client: Client, body: dict[str, Any]) -> None:
    body["scoring"]["evidence_view"] = "sideways"
    body["rubric"]["api_key"] = "nope"
    response = admin_client.post(
        reverse(ADD_URL), {"template_id": "adm", "config_body": json.dumps(body), "notes": ""}
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["config_body"]
    assert any("rubric.api_key" in e and ".env.example" in e for e in errors)
    assert ConfigTemplate.objects.count() == 0
    # Schema errors (once the secret is gone) are on the field too.
    del body["rubric"]["api_key"]
    response = admin_client.post(
        reverse(ADD_URL), {"template_id": "adm", "config_body": json.dumps(body), "notes": ""}
    )
    errors = response.context["adminform"].form.errors["config_body"]
    assert any("scoring.evidence_view" in e and "fix: use one of" in e for e in errors)
    assert ConfigTemplate.objects.count() == 0


def test_change_page_save_creates_next_version_and_leaves_v1(
    admin_client: Client, body: dict[str, Any]
) -> None:
    v1 = template_create(template_id="adm", body=body, notes="first")
    before = ConfigTemplate.objects.filter(pk=v1.pk).values().get()
    page = admin_client.get(change_url(v1))
    assert page.status_code == 200
    assert "Save as next version" in page.content.decode()
    assert "Saving creates <b>adm@v2</b>" in page.content.decode()
    edited = copy.deepcopy(v1.config_body)
    edited["rubric"]["scale_size"] = 7
    response = admin_client.post(
        change_url(v1), {"config_body": json.dumps(edited), "notes": "second", "_save": "1"}
    )
    v2 = ConfigTemplate.objects.get(template_id="adm", version=2)
    assert response.status_code == 302
    assert response["Location"] == change_url(v2)
    assert v2.config_body["rubric"]["scale_size"] == 7
    assert v2.notes == "second"
    assert ConfigTemplate.objects.filter(pk=v1.pk).values().get() == before
    # Read-only fields posted anyway are ignored: the version and id come from the service.
    admin_client.post(
        change_url(v1),
        {"config_body": json.dumps(edited), "notes": "", "version": "99", "template_id": "x"},
    )
    assert sorted(
        ConfigTemplate.objects.filter(template_id="adm").values_list("version", flat=True)
    ) == [1, 2, 3]
    assert not ConfigTemplate.objects.filter(template_id="x").exists()


def test_change_page_invalid_body_creates_nothing(
    admin_client: Client, body: dict[str, Any]
) -> None:
    v1 = template_create(template_id="adm", body=body)
    response = admin_client.post(change_url(v1), {"config_body": '{"rubric": {}}', "notes": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["config_body"]
    assert ConfigTemplate.objects.count() == 1


def test_template_delete_refused(admin_client: Client, body: dict[str, Any]) -> None:
    v1 = template_create(template_id="adm", body=body)
    delete_url = reverse("admin:configs_app_configtemplate_delete", args=[v1.pk])
    assert admin_client.get(delete_url).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    changelist = admin_client.get(reverse("admin:configs_app_configtemplate_changelist"))
    assert changelist.status_code == 200
    assert "delete_selected" not in changelist.content.decode()
    bulk = admin_client.post(
        reverse("admin:configs_app_configtemplate_changelist"),
        {"action": "delete_selected", "_selected_action": [v1.pk], "post": "yes"},
    )
    assert bulk.status_code in {200, 302}
    assert ConfigTemplate.objects.filter(pk=v1.pk).exists()


def test_changelist_shows_short_signature(admin_client: Client, body: dict[str, Any]) -> None:
    v1 = template_create(template_id="adm", body=body)
    page = admin_client.get(reverse("admin:configs_app_configtemplate_changelist")).content
    assert v1.spec_signature[:12].encode() in page
    assert v1.spec_signature.encode() not in page


@pytest.fixture
def run_configs(body: dict[str, Any]) -> tuple[RunConfig, RunConfig]:
    v1 = template_create(template_id="adm", body=body)
    body["rubric"]["concept"] = "populism"
    v2 = template_create(template_id="adm", body=body)
    first = run_config_create(template=v1, resolved_policy={"rpm": 500}, git_sha="a")
    second = run_config_create(template=v2, resolved_policy={"rpm": 250}, git_sha="b")
    return first, second


def test_run_config_admin_is_read_only(
    admin_client: Client, run_configs: tuple[RunConfig, RunConfig]
) -> None:
    rc = run_configs[1]
    assert admin_client.get(reverse("admin:configs_app_runconfig_add")).status_code == 403
    url = reverse("admin:configs_app_runconfig_change", args=[rc.pk])
    assert admin_client.post(url, {"git_sha": "tampered"}).status_code == 403
    delete_url = reverse("admin:configs_app_runconfig_delete", args=[rc.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert RunConfig.objects.get(pk=rc.pk).git_sha == "b"
    page = admin_client.get(url).content.decode()
    assert 'name="_save"' not in page


def test_run_config_page_shows_diff_against_previous(
    admin_client: Client, run_configs: tuple[RunConfig, RunConfig]
) -> None:
    first, second = run_configs
    page = admin_client.get(reverse("admin:configs_app_runconfig_change", args=[second.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert f"previous {first.run_config_id} (v1)" in html
    assert "-      &quot;concept&quot;: &quot;fascism&quot;" in html
    assert "+      &quot;concept&quot;: &quot;populism&quot;" in html
    assert "-    &quot;rpm&quot;: 500" in html
    assert "+    &quot;rpm&quot;: 250" in html
    first_page = admin_client.get(reverse("admin:configs_app_runconfig_change", args=[first.pk]))
    assert "First run config of template adm" in first_page.content.decode()


def test_run_config_identical_to_previous(admin_client: Client, body: dict[str, Any]) -> None:
    template = template_create(template_id="same", body=body)
    first = run_config_create(template=template, resolved_policy={}, git_sha="a")
    second = run_config_create(template=template, resolved_policy={}, git_sha="a")
    html = admin_client.get(
        reverse("admin:configs_app_runconfig_change", args=[second.pk])
    ).content.decode()
    assert f"Identical to previous run config {first.run_config_id}" in html
