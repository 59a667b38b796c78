"""Fixtures for pipeline tests: the provider simulator over HTTP, eager or real Celery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from configs_app.services import template_create
from evidence.services.pools import demo_pool_load
from judge_project.celery import app as celery_app
from orchestration.simulator.config import SimulatorConfig
from orchestration.simulator.server import SimulatorHandle, run_in_thread
from orchestration.transport.providers import reset_clients

DEMO_BODY: dict[str, Any] = {
    "rubric": {"model": "gpt-4.1-mini", "scale_size": 4, "concept": "fascism"},
    "scoring": {
        "model": "gpt-4.1-mini",
        "method": "subset",
        "abstain_enabled": True,
        "evidence_view": "l0_raw",
        "randomizations": ["anonymize_stages", "hide_label_text", "shuffle_rubric_order"],
        "evidence_bundle_size": 1,
        "bundle_strategy": "window_round_robin",
        "clustering_seed": 7,
    },
    "sample_count": 3,
    "evidence": {"pool_tag": "pool-a"},
}


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorHandle]:
    handle = run_in_thread(SimulatorConfig(seed=1, data_dir=tmp_path / "sim"))
    reset_clients()
    with override_settings(JUDGE_SIMULATOR_URL=handle.url):
        yield handle
    reset_clients()
    handle.stop()


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Run Celery tasks inline (used only for deterministic service-level pipeline tests)."""
    old = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


def make_experiment(
    tag: str = "exp-a",
    *,
    body: dict[str, Any] | None = None,
    pool_tag: str = "pool-a",
    windows: int = 2,
    per_window: int = 3,
) -> str:
    from orchestration.services.runs import experiment_create

    body = dict(body or DEMO_BODY)
    body["evidence"] = {"pool_tag": pool_tag}
    template = template_create(template_id=f"t-{tag}", body=body)
    demo_pool_load(tag=pool_tag, windows=windows, per_window=per_window)
    experiment_create(template_ref=f"{template.template_id}@{template.version}", tag=tag)
    return tag
