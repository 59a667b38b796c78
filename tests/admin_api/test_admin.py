"""Admin pages and actions through the test client, as a superuser."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from configs_app.models import ConfigTemplate
from evidence.models import BundlePlan, BundlePlanItem, Evidence, Pool
from orchestration.models import (
    Experiment,
    LlmBatch,
    LlmRequest,
    PromptTemplate,
    Rubric,
    RubricCritic,
    Run,
    RunEvent,
    Sample,
    Score,
    ScoreCritic,
    ScoreTarget,
    TransportHold,
)
from orchestration.services.control import run_pause
from tests.admin_api.conftest import MakeRequest

pytestmark = pytest.mark.django_db

RECORD_MODELS = [
    Run,
    Sample,
    ScoreTarget,
    Rubric,
    RubricCritic,
    Score,
    ScoreCritic,
    LlmRequest,
    LlmBatch,
    RunEvent,
    TransportHold,
    PromptTemplate,
]


def _url(model: type[Any], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _messages(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _action(client: Client, model: type[Any], action: str, pks: list[int]) -> Any:
    return client.post(
        _url(model, "changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )


def _populate(run: Run, make_request: MakeRequest) -> LlmRequest:
    """One of every record so that list and change pages have something to render."""
    sample = Sample.objects.filter(run=run).order_by("ordinal").first()
    assert sample is not None
    target = ScoreTarget.objects.filter(sample=sample).order_by("pk").first()
    assert target is not None
    prompt = PromptTemplate.objects.create(content_hash="ab" * 32, content="SYSTEM PROMPT TEXT")
    batch = LlmBatch.objects.create(
        provider="openai",
        model="gpt-4.1-mini",
        provider_model="gpt-4.1-mini",
        status="running",
        batch_key="k1",
        submission_key="s1",
        provider_batch_id="batch_abc",
        request_count=1,
    )
    request = make_request(
        run,
        f"sample:{sample.pk}:rubric_gen",
        1,
        "failed",
        system_prompt=prompt,
        user_prompt="USER PROMPT TEXT",
        output_text="RAW OUTPUT TEXT",
        error_class="parse",
        error_message="RAW ERROR TEXT",
    )
    make_request(run, f"sample:{sample.pk}:rubric_gen", 2, "in_flight", batch=batch)
    common = {"run": run, "sample": sample, "llm_request_id": request.pk, "model": "m"}
    Rubric.objects.create(
        **common,
        concept="fascism",
        scale_size=4,
        justification="because",
        stages=[{"stage_number": 1, "label": "x", "criteria": []}],
        label_mapping={"A": 1},
    )
    RubricCritic.objects.create(
        **common, justification="j", observability_score=0.5, discriminability_score=0.7
    )
    Score.objects.create(
        **common, target=target, justification="j", raw_verdict="VERDICT: A", decoded_scores=[1]
    )
    ScoreCritic.objects.create(
        **common, target=target, justification="j", expert_agreement_prob=0.9
    )
    TransportHold.objects.create(process="run:999999", reason="paused")
    return request


# --- rendering -------------------------------------------------------------------------------


def test_every_changelist_and_change_page_renders(
    admin_client: Client, run: Run, make_request: MakeRequest
) -> None:
    _populate(run, make_request)
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in {"orchestration", "evidence"}:
            continue
        response = admin_client.get(_url(model, "changelist"))
        assert response.status_code == 200, model
        obj = model_admin.get_queryset(response.wsgi_request).order_by("pk").first()
        if obj is not None:
            page = admin_client.get(_url(model, "change", obj.pk))
            assert page.status_code == 200, (model, page.content[:500])


def test_experiment_list_shows_latest_run(admin_client: Client, run: Run) -> None:
    html = admin_client.get(_url(Experiment, "changelist")).content.decode()
    assert "exp1" in html
    assert reverse("admin:orchestration_run_progress", args=[run.pk]) in html
    assert ">queued<" in html


def test_run_progress_page_shows_numbers(
    admin_client: Client, run: Run, make_request: MakeRequest
) -> None:
    _populate(run, make_request)
    Run.objects.filter(pk=run.pk).update(materialized_stages=["rubric_gen"])
    RunEvent.objects.create(process=run.process, event_type="stage_materialized", stage="x")
    response = admin_client.get(reverse("admin:orchestration_run_progress", args=[run.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    stages = {s["stage"]: s for s in response.context["stages"]}
    rubric = stages["rubric_gen"]
    assert (rubric["total"], rubric["completed"], rubric["in_flight"]) == (2, 1, 1)
    assert rubric["failed_attempts"] == 1
    assert rubric["retries"] == 1
    assert rubric["pct_completed"] == 50.0
    row = re.search(r'<tr[^>]*data-stage="rubric_gen".*?</tr>', html, re.S)
    assert row is not None
    assert '<td class="num total">2</td>' in row.group(0)
    assert '<td class="num completed">1</td>' in row.group(0)
    assert '<td class="num in-flight">1</td>' in row.group(0)
    assert "width: 50.00%" in row.group(0)
    assert run.run_config.spec_signature in html
    assert reverse("admin:configs_app_runconfig_change", args=[run.run_config_id]) in html
    assert 'id="batches-in-flight">1<' in html
    assert "batch_abc" in html  # the batch table
    assert "stage_materialized" in html
    assert "run_created" in html
    # Diagnostics: one failed parse attempt, recovered (a later attempt exists): not terminal.
    assert 'id="failed-attempts"' in html
    assert "RAW ERROR TEXT" in html
    assert "Terminal failures (0)" in html


def test_run_progress_page_404_for_unknown_run(admin_client: Client, db: None) -> None:
    url = reverse("admin:orchestration_run_progress", args=[987654])
    assert admin_client.get(url).status_code == 404


def test_run_change_page_links_progress_and_config(admin_client: Client, run: Run) -> None:
    html = admin_client.get(_url(Run, "change", run.pk)).content.decode()
    assert reverse("admin:orchestration_run_progress", args=[run.pk]) in html
    assert reverse("admin:configs_app_runconfig_change", args=[run.run_config_id]) in html


def test_request_page_shows_prompt_output_and_error(
    admin_client: Client, run: Run, make_request: MakeRequest
) -> None:
    request = _populate(run, make_request)
    html = admin_client.get(_url(LlmRequest, "change", request.pk)).content.decode()
    for text in ("SYSTEM PROMPT TEXT", "USER PROMPT TEXT", "RAW OUTPUT TEXT", "RAW ERROR TEXT"):
        assert text in html
    listing = admin_client.get(_url(LlmRequest, "changelist"), {"error_class": "parse"})
    assert listing.status_code == 200
    assert f"sample:{request.custom_key.split(':')[1]}:rubric_gen" in listing.content.decode()
    by_batch = admin_client.get(
        _url(LlmRequest, "changelist"), {"batch__id__exact": request.batch_id or 0}
    )
    assert by_batch.status_code == 200
    by_process = admin_client.get(_url(LlmRequest, "changelist"), {"process": run.process})
    assert by_process.status_code == 200


# --- read-only records -----------------------------------------------------------------------


@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda m: m.__name__)
def test_records_have_no_add_change_or_delete(
    model: type[Any], admin_client: Client, run: Run, make_request: MakeRequest
) -> None:
    _populate(run, make_request)
    model_admin = admin.site._registry[model]
    request = admin_client.get(_url(model, "changelist")).wsgi_request
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert "delete_selected" not in model_admin.get_actions(request)
    assert admin_client.get(_url(model, "add")).status_code == 403
    obj = model.objects.order_by("pk").first()
    assert obj is not None
    assert admin_client.get(_url(model, "delete", obj.pk)).status_code == 403
    before = model.objects.filter(pk=obj.pk).values().get()
    admin_client.post(_url(model, "change", obj.pk), {})  # refused or ignored, never saved
    assert model.objects.filter(pk=obj.pk).values().get() == before


# --- actions ---------------------------------------------------------------------------------


def test_start_action_creates_run_then_reports_active_run_exists(
    admin_client: Client, experiment: Experiment
) -> None:
    response = _action(admin_client, Experiment, "start_runs", [experiment.pk])
    run = Run.objects.get(experiment=experiment)
    assert f"exp1: started run {run.pk}" in _messages(response)
    response = _action(admin_client, Experiment, "start_runs", [experiment.pk])
    (message,) = _messages(response)
    assert message.startswith("exp1: not started: [active_run_exists]")
    assert "(fix: " in message
    assert Run.objects.filter(experiment=experiment).count() == 1


def test_start_action_batch_reports_each_tag(
    admin_client: Client, experiment: Experiment, run: Run
) -> None:
    other = Experiment.objects.create(
        tag="exp2", template=experiment.template, pool=experiment.pool
    )
    response = _action(admin_client, Experiment, "start_runs", [experiment.pk, other.pk])
    messages = _messages(response)
    new_run = Run.objects.get(experiment=other)
    assert f"exp2: started run {new_run.pk}" in messages
    assert any(m.startswith("exp1: not started: [active_run_exists]") for m in messages)


def test_experiment_pause_resume_cancel_latest(admin_client: Client, run: Run) -> None:
    exp = run.experiment
    response = _action(admin_client, Experiment, "pause_latest", [exp.pk])
    assert f"exp1: run {run.pk} is paused" in _messages(response)
    response = _action(admin_client, Experiment, "resume_latest", [exp.pk])
    assert f"exp1: run {run.pk} is running" in _messages(response)
    response = _action(admin_client, Experiment, "cancel_latest", [exp.pk])
    assert f"exp1: run {run.pk} is canceled" in _messages(response)
    run.refresh_from_db()
    assert run.status == "canceled"
    assert run.last_error.startswith("canceled in admin by")


def test_experiment_without_run_gets_a_warning(
    admin_client: Client, experiment: Experiment
) -> None:
    response = _action(admin_client, Experiment, "pause_latest", [experiment.pk])
    assert _messages(response) == ["exp1: has no run to pause"]


def test_run_actions_call_services_and_report_errors(admin_client: Client, run: Run) -> None:
    response = _action(admin_client, Run, "resume_runs", [run.pk])
    (message,) = _messages(response)
    assert message.startswith(f"run {run.pk}: resume failed: [invalid_state]")
    _action(admin_client, Run, "pause_runs", [run.pk])
    run.refresh_from_db()
    assert run.status == "paused"
    assert TransportHold.objects.filter(process=run.process).exists()
    _action(admin_client, Run, "resume_runs", [run.pk])
    run.refresh_from_db()
    assert run.status == "running"
    _action(admin_client, Run, "cancel_runs", [run.pk])
    run.refresh_from_db()
    assert run.status == "canceled"


def test_progress_page_buttons(admin_client: Client, run: Run) -> None:
    url = reverse("admin:orchestration_run_progress", args=[run.pk])
    assert 'value="pause"' in admin_client.get(url).content.decode()
    response = admin_client.post(url, {"op": "pause"}, follow=True)
    assert f"run {run.pk}: run {run.pk} is paused" in _messages(response)
    assert 'value="resume"' in response.content.decode()
    admin_client.post(url, {"op": "resume", "pause_after": "score_gen"})
    run.refresh_from_db()
    assert (run.status, run.pause_after) == ("running", "score_gen")
    admin_client.post(url, {"op": "cancel"})
    run.refresh_from_db()
    assert run.status == "canceled"


def test_actions_need_the_operate_permission(client: Client, run: Run) -> None:
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_run", "view_experiment"])
    )
    client.force_login(user)
    request = client.get(_url(Run, "changelist")).wsgi_request
    assert admin.site._registry[Run].get_actions(request) == {}
    url = reverse("admin:orchestration_run_progress", args=[run.pk])
    assert client.get(url).status_code == 200
    assert client.post(url, {"op": "pause"}).status_code == 403
    run_pause(run_id=run.pk)  # the service itself is unaffected


# --- experiment add form ---------------------------------------------------------------------


def test_add_form_creates_through_the_service(
    admin_client: Client, template: ConfigTemplate, pool: Pool
) -> None:
    response = admin_client.post(
        _url(Experiment, "add"), {"tag": "", "template": template.pk, "pool": ""}, follow=True
    )
    assert response.status_code == 200
    exp = Experiment.objects.get()
    assert re.fullmatch(r"[a-z]+-[a-z]+-[0-9a-f]{6}", exp.tag)  # generated
    assert exp.pool_id == pool.pk  # from the spec's evidence.pool_tag
    assert any(m.startswith(f"Created experiment {exp.tag}") for m in _messages(response))


def test_add_form_validates_tag(
    admin_client: Client, template: ConfigTemplate, experiment: Experiment
) -> None:
    response = admin_client.post(
        _url(Experiment, "add"), {"tag": "Bad Tag", "template": template.pk, "pool": ""}
    )
    assert response.status_code == 200
    assert "tag" in response.context["adminform"].form.errors
    response = admin_client.post(
        _url(Experiment, "add"), {"tag": "exp1", "template": template.pk, "pool": ""}
    )
    assert "tag" in response.context["adminform"].form.errors
    assert Experiment.objects.count() == 1


def test_add_form_reports_service_refusal(
    admin_client: Client, template: ConfigTemplate, pool: Pool
) -> None:
    other = Pool.objects.create(tag="other-pool")
    plan = BundlePlan.objects.create(
        tag="plan1", pool=other, strategy="x", bundle_size=1, plan_signature="sig"
    )
    response = admin_client.post(
        _url(Experiment, "add"),
        {"tag": "exp9", "template": template.pk, "pool": pool.pk, "bundle_plan": plan.pk},
        follow=True,
    )
    (message,) = _messages(response)
    assert message.startswith("not created: [start_refused] bundle plan 'plan1' belongs to")
    assert not Experiment.objects.filter(tag="exp9").exists()


def test_experiments_are_not_editable(admin_client: Client, experiment: Experiment) -> None:
    model_admin = admin.site._registry[Experiment]
    request = admin_client.get(_url(Experiment, "changelist")).wsgi_request
    assert not model_admin.has_change_permission(request, experiment)
    assert not model_admin.has_delete_permission(request, experiment)
    page = admin_client.get(_url(Experiment, "change", experiment.pk))
    assert page.status_code == 200
    assert "adm-tpl" in page.content.decode()


# --- evidence --------------------------------------------------------------------------------


def test_evidence_page_shows_four_levels_side_by_side(admin_client: Client, pool: Pool) -> None:
    evidence = Evidence.objects.order_by("pk").first()
    assert evidence is not None
    Evidence.objects.filter(pk=evidence.pk).update(
        l1_cleaned="LEVEL ONE TEXT", l2_neutralized="LEVEL TWO <b>TEXT</b>"
    )
    html = admin_client.get(_url(Evidence, "change", evidence.pk)).content.decode()
    table = re.search(r"<table class='evidence-levels'.*?</table>", html, re.S)
    assert table is not None
    cells = re.findall(r"<th style[^>]*>(.*?)</th>", table.group(0))
    assert cells == ["l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted"]
    assert table.group(0).count("<td") == 4
    assert "LEVEL ONE TEXT" in table.group(0)
    assert "LEVEL TWO &lt;b&gt;TEXT&lt;/b&gt;" in table.group(0)  # escaped, never rendered
    assert "not produced" in table.group(0)  # l3 is missing
    assert f"{len(evidence.l0_raw)} characters" in table.group(0)  # l0 is shown too
    listing = admin_client.get(_url(Evidence, "changelist")).content.decode()
    assert "L0 L1 L2" in listing


def test_pool_list_shows_member_count(admin_client: Client, pool: Pool) -> None:
    response = admin_client.get(_url(Pool, "changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_list[0].n_members == 6
    assert '<td class="field-member_count">6</td>' in response.content.decode()


def test_bundle_plan_page_lists_items_read_only(admin_client: Client, pool: Pool) -> None:
    plan = BundlePlan.objects.create(
        tag="plan1", pool=pool, strategy="window_round_robin", bundle_size=2, plan_signature="s"
    )
    for pos, ev in enumerate(Evidence.objects.order_by("pk")[:2]):
        BundlePlanItem.objects.create(
            plan=plan,
            bundle_index=0,
            evidence=ev,
            window_id=ev.window_id,
            position=pos,
            bundle_signature="sig",
        )
    response = admin_client.get(_url(BundlePlan, "change", plan.pk))
    assert response.status_code == 200
    (formset,) = response.context["inline_admin_formsets"]
    assert len(formset.formset.forms) == 2
    assert not formset.has_add_permission
    assert not formset.has_delete_permission


@pytest.mark.parametrize("model", [*RECORD_MODELS, Experiment, Evidence], ids=lambda m: m.__name__)
@pytest.mark.parametrize("term", ["exp1", "1", "run:1"])
def test_search_accepts_text_and_numbers(
    model: type[Any], term: str, admin_client: Client, run: Run, make_request: MakeRequest
) -> None:
    _populate(run, make_request)
    assert admin_client.get(_url(model, "changelist"), {"q": term}).status_code == 200


def test_run_list_filters(admin_client: Client, run: Run) -> None:
    response = admin_client.get(_url(Run, "changelist"), {"status": "queued"})
    assert list(response.context["cl"].result_list) == [run]
    response = admin_client.get(_url(Run, "changelist"), {"current_stage": "score_gen"})
    assert list(response.context["cl"].result_list) == []
