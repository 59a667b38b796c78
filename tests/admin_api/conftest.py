"""Fixtures for the admin and operator API tests: a started-able experiment on a demo pool.

Runs start for real (``experiment_start``); the simulator URL satisfies the preflight. With
the default non-transactional ``django_db`` the ``on_commit`` enqueue never fires, so no
Celery message is sent and the tests stay in the database.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from configs_app.models import ConfigTemplate
from configs_app.services import template_create
from evidence.models import Pool
from evidence.services.pools import demo_pool_load
from orchestration.models import Experiment, LlmRequest, Run
from orchestration.services.runs import experiment_create, experiment_start

BODY: dict[str, Any] = {
    "rubric": {"model": "gpt-4.1-mini", "scale_size": 4, "concept": "fascism"},
    "scoring": {
        "model": "gpt-4.1-mini",
        "method": "subset",
        "abstain_enabled": True,
        "evidence_view": "l2_neutralized",
        "randomizations": ["anonymize_stages", "hide_label_text", "shuffle_rubric_order"],
        "evidence_bundle_size": 1,
        "bundle_strategy": "window_round_robin",
        "clustering_seed": 7,
    },
    "sample_count": 2,
    "evidence": {"pool_tag": "p"},
}
TOKEN = "test-token-123"


@pytest.fixture(autouse=True)
def _simulator(settings: Any) -> None:
    settings.JUDGE_SIMULATOR_URL = "http://127.0.0.1:9"


@pytest.fixture
def template(db: None) -> ConfigTemplate:
    return template_create(template_id="adm-tpl", body=copy.deepcopy(BODY))


@pytest.fixture
def pool(db: None) -> Pool:
    return demo_pool_load(tag="p", windows=2, per_window=3)


@pytest.fixture
def experiment(template: ConfigTemplate, pool: Pool) -> Experiment:
    return experiment_create(template_ref="adm-tpl", pool_tag="p", tag="exp1")


@pytest.fixture
def run(experiment: Experiment) -> Run:
    return experiment_start(tag=experiment.tag)


MakeRequest = Callable[..., LlmRequest]


@pytest.fixture
def make_request() -> MakeRequest:
    """make_request(run, key, attempt, status, **fields): one crafted attempt row."""

    def make(run: Run, key: str, attempt: int, status: str, **fields: Any) -> LlmRequest:
        stage = key.rsplit(":", 1)[1]
        return LlmRequest.objects.create(
            custom_key=key,
            attempt_index=attempt,
            process=run.process,
            stage=stage,
            status=status,
            provider="openai",
            model="gpt-4.1-mini",
            provider_model="gpt-4.1-mini",
            user_prompt=fields.pop("user_prompt", "judge this"),
            next_attempt_at=timezone.now(),
            **fields,
        )

    return make


class ApiClient:
    """The Django test client with the bearer header and JSON bodies, CSRF enforced."""

    def __init__(self, token: str | None = TOKEN) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, url: str, **params: Any) -> Any:
        return self.client.get(url, params, headers=self._headers())

    def post(self, url: str, body: Any = None, *, raw: str | None = None) -> Any:
        data = raw if raw is not None else ("" if body is None else json.dumps(body))
        return self.client.post(
            url, data=data, content_type="application/json", headers=self._headers()
        )


@pytest.fixture
def api(settings: Any, db: None) -> ApiClient:
    settings.JUDGE_API_TOKENS = ["other-token", TOKEN]
    return ApiClient()
