"""The operator JSON API: auth, start, progress, control, events, diagnostics, errors."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from orchestration.api import configured_tokens, token_valid
from orchestration.models import Experiment, Run, RunEvent, Sample
from tests.admin_api.conftest import TOKEN, ApiClient, MakeRequest

pytestmark = pytest.mark.django_db

PROGRESS_KEYS = {
    "run_id",
    "experiment",
    "status",
    "current_stage",
    "pause_after",
    "samples",
    "targets",
    "stages",
    "batches_in_flight",
    "spec_signature",
    "created_at",
    "started_at",
    "completed_at",
    "last_error",
    "eta_seconds",
    "terminal",
    "has_failures",
}
STAGE_KEYS = {
    "stage",
    "total",
    "completed",
    "failed",
    "pending",
    "in_flight",
    "queued",
    "retries",
    "failed_attempts",
    "materialized",
    "status",
}


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "fix"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


# --- auth ------------------------------------------------------------------------------------


def test_no_tokens_configured_is_503(settings: Any, db: None) -> None:
    settings.JUDGE_API_TOKENS = []
    response = ApiClient().get("/api/v1/experiments")
    assert response.status_code == 503
    error = _error(response)
    assert error["code"] == "api_disabled"
    assert "JUDGE_API_TOKENS" in error["fix"]


def test_missing_or_wrong_token_is_401(api: ApiClient) -> None:
    for client in (ApiClient(token=None), ApiClient(token="nope")):
        response = client.get("/api/v1/experiments")
        assert response.status_code == 401
        assert _error(response)["code"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")
    basic = api.client.get("/api/v1/experiments", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401


def test_any_configured_token_works(api: ApiClient) -> None:
    assert api.get("/api/v1/experiments").status_code == 200
    assert ApiClient(token="other-token").get("/api/v1/experiments").status_code == 200


def test_token_helpers(settings: Any) -> None:
    settings.JUDGE_API_TOKENS = " a , ,b "
    assert configured_tokens() == ["a", "b"]
    assert token_valid("b", ["a", "b"])
    assert not token_valid("c", ["a", "b"])
    assert not token_valid("", ["a"])


def test_session_login_is_not_enough(admin_client: Any, api: ApiClient) -> None:
    assert admin_client.get("/api/v1/experiments").status_code == 401


# --- experiments -----------------------------------------------------------------------------


def test_experiments_list(api: ApiClient, run: Run) -> None:
    Experiment.objects.create(
        tag="exp0", template=run.experiment.template, pool=run.experiment.pool
    )
    body = api.get(reverse("api:experiments")).json()
    assert body["count"] == 2
    by_tag = {e["tag"]: e for e in body["experiments"]}
    assert by_tag["exp1"]["template"] == "adm-tpl@v1"
    assert by_tag["exp1"]["pool"] == "p"
    assert by_tag["exp1"]["latest_run"]["run_id"] == run.pk
    assert by_tag["exp1"]["latest_run"]["status"] == "queued"
    assert by_tag["exp0"]["latest_run"] is None
    page = api.get(reverse("api:experiments"), limit=1, offset=1).json()
    assert [e["tag"] for e in page["experiments"]] == ["exp1"]
    assert api.get(reverse("api:experiments"), limit="x").status_code == 400


def test_start_then_double_start_then_bad_tag(api: ApiClient, experiment: Experiment) -> None:
    url = reverse("api:experiments-start")
    first = api.post(url, {"tags": ["exp1"], "pause_after": None})
    assert first.status_code == 200
    run = Run.objects.get(experiment=experiment)
    assert first.json() == {"started": [{"tag": "exp1", "run_id": run.pk}], "failed": []}
    second = api.post(url, {"tags": ["exp1", "no-such-exp"]}).json()
    assert second["started"] == []
    failed = {f["tag"]: f["error"] for f in second["failed"]}
    assert failed["exp1"]["code"] == "active_run_exists"
    assert failed["exp1"]["run_id"] == run.pk
    assert failed["no-such-exp"]["code"] == "not_found"
    assert failed["no-such-exp"]["fix"]


def test_start_with_pause_after(api: ApiClient, experiment: Experiment) -> None:
    body = api.post(
        reverse("api:experiments-start"), {"tags": ["exp1"], "pause_after": "rubric_critic"}
    ).json()
    run = Run.objects.get(pk=body["started"][0]["run_id"])
    assert run.pause_after == "rubric_critic"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "malformed_json"),
        ('["exp1"]', "malformed_json"),
        ('{"tags": []}', "invalid_request"),
        ('{"tags": "exp1"}', "invalid_request"),
        ('{"tags": ["exp1"], "pause_after": "later"}', "invalid_request"),
    ],
)
def test_start_rejects_bad_bodies(
    api: ApiClient, experiment: Experiment, raw: str, code: str
) -> None:
    response = api.post(reverse("api:experiments-start"), raw=raw)
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == code
    if code == "malformed_json":
        assert "JSON" in error["message"]
    assert not Run.objects.exists()


def test_method_not_allowed_is_405(api: ApiClient, run: Run) -> None:
    response = api.get(reverse("api:experiments-start"))
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert _error(response)["code"] == "method_not_allowed"
    assert api.post(reverse("api:run", args=[run.pk]), {}).status_code == 405


def test_unknown_route_is_json_404(api: ApiClient) -> None:
    response = api.get("/api/v1/nothing/here")
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


# --- runs ------------------------------------------------------------------------------------


def test_progress_json_by_id_and_by_tag(api: ApiClient, run: Run) -> None:
    by_id = api.get(reverse("api:run", args=[run.pk])).json()
    by_tag = api.get(reverse("api:run", args=["exp1"])).json()
    assert set(by_id) == PROGRESS_KEYS
    assert by_id["run_id"] == by_tag["run_id"] == run.pk
    assert [s["stage"] for s in by_id["stages"]] == [
        "rubric_gen",
        "rubric_critic",
        "score_gen",
        "score_critic",
    ]
    assert set(by_id["stages"][0]) == STAGE_KEYS
    assert by_id["stages"][0]["total"] == 2
    assert by_id["spec_signature"] == run.run_config.spec_signature
    assert by_id["has_failures"] is False


def test_unknown_run_is_404(api: ApiClient, db: None) -> None:
    for ref in ("987654", "no-such-tag"):
        response = api.get(reverse("api:run", args=[ref]))
        assert response.status_code == 404
        assert _error(response)["code"] == "not_found"


def test_pause_resume_cancel(api: ApiClient, run: Run) -> None:
    paused = api.post(reverse("api:run-pause", args=["exp1"]))
    assert paused.status_code == 200
    assert paused.json() == {
        "run_id": run.pk,
        "experiment": "exp1",
        "status": "paused",
        "current_stage": "rubric_gen",
        "pause_after": None,
    }
    resumed = api.post(reverse("api:run-resume", args=[run.pk]), {"pause_after": "score_gen"})
    assert resumed.status_code == 200
    assert (resumed.json()["status"], resumed.json()["pause_after"]) == ("running", "score_gen")
    canceled = api.post(reverse("api:run-cancel", args=[run.pk]), {"reason": "test over"})
    assert canceled.json()["status"] == "canceled"
    run.refresh_from_db()
    assert run.last_error == "test over"


def test_invalid_state_is_409(api: ApiClient, run: Run) -> None:
    response = api.post(reverse("api:run-resume", args=[run.pk]))
    assert response.status_code == 409
    assert _error(response)["code"] == "invalid_state"
    api.post(reverse("api:run-cancel", args=[run.pk]))
    response = api.post(reverse("api:run-pause", args=[run.pk]))
    assert response.status_code == 409


def test_active_run_exists_on_restart_is_reported_per_tag(api: ApiClient, run: Run) -> None:
    body = api.post(reverse("api:experiments-start"), {"tags": ["exp1"]}).json()
    assert body["failed"][0]["error"]["code"] == "active_run_exists"


def test_resume_rejects_unknown_stage_and_bad_json(api: ApiClient, run: Run) -> None:
    api.post(reverse("api:run-pause", args=[run.pk]))
    response = api.post(reverse("api:run-resume", args=[run.pk]), {"pause_after": "nope"})
    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_request"
    response = api.post(reverse("api:run-resume", args=[run.pk]), raw="{")
    assert response.status_code == 400
    assert _error(response)["code"] == "malformed_json"
    run.refresh_from_db()
    assert run.status == "paused"


def test_events_paging(api: ApiClient, run: Run) -> None:
    RunEvent.objects.bulk_create(
        RunEvent(process=run.process, event_type=f"e{i}", payload={"i": i}) for i in range(5)
    )
    RunEvent.objects.create(process="run:999999", event_type="other run")
    url = reverse("api:run-events", args=[run.pk])
    first = api.get(url, limit=4).json()
    types = [e["event_type"] for e in first["events"]]
    assert types == ["run_created", "e0", "e1", "e2"]
    assert first["has_more"] is True
    assert first["next_after"] == first["events"][-1]["id"]
    second = api.get(url, after=first["next_after"], limit=4).json()
    assert [e["event_type"] for e in second["events"]] == ["e3", "e4"]
    assert second["has_more"] is False
    assert second["events"][0]["payload"] == {"i": 3}
    assert set(second["events"][0]) == {
        "id",
        "created_at",
        "stage",
        "event_type",
        "custom_key",
        "batch_id",
        "task_id",
        "payload",
    }
    empty = api.get(url, after=second["next_after"]).json()
    assert empty["events"] == []
    assert empty["next_after"] == second["next_after"]
    assert api.get(url, after=-1).status_code == 400


def test_diagnostics_endpoint(api: ApiClient, run: Run, make_request: MakeRequest) -> None:
    sample = Sample.objects.filter(run=run).order_by("ordinal").first()
    assert sample is not None
    key = f"sample:{sample.pk}:rubric_gen"
    make_request(run, key, 1, "failed", error_class="timeout", error_message="slow")
    make_request(run, key, 2, "failed", error_class="parse", error_message="bad json")
    body = api.get(reverse("api:run-diagnostics", args=["exp1"])).json()
    assert body["run_id"] == run.pk
    assert body["failed_attempts"]["total"] == 2
    groups = {(g["stage"], g["error_class"]): g for g in body["failed_attempts"]["groups"]}
    assert set(groups) == {("rubric_gen", "timeout"), ("rubric_gen", "parse")}
    assert groups[("rubric_gen", "timeout")]["sample"]["error_message"] == "slow"
    terminal = body["terminal_failures"]
    assert terminal["total"] == 1
    assert [(g["stage"], g["error_class"], g["count"]) for g in terminal["groups"]] == [
        ("rubric_gen", "parse", 1)
    ]
    assert terminal["keys"][0]["custom_key"] == key
    assert terminal["keys"][0]["attempt_index"] == 2
    assert body["has_terminal_failures"] is True
