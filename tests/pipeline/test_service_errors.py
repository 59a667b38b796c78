"""Bad input to the run services: clear structured errors, nothing written."""

from __future__ import annotations

import pytest

from orchestration.models import Experiment, LlmBatch, LlmRequest, Run
from orchestration.services.control import run_cancel
from orchestration.services.errors import StartRefused
from orchestration.services.runs import experiment_create, experiment_start, experiments_start
from orchestration.transport.services.batches import batch_submit, batches_form
from tests.pipeline.conftest import DEMO_BODY, make_experiment

pytestmark = pytest.mark.django_db(transaction=True)


def test_unknown_pause_after_is_refused_before_any_write(simulator) -> None:
    tag = make_experiment()
    with pytest.raises(StartRefused, match="pause_after"):
        experiment_start(tag=tag, pause_after="bogus")
    assert not Run.objects.exists()


def test_bad_template_reference_is_a_service_error(simulator) -> None:
    with pytest.raises(StartRefused, match="bad template reference"):
        experiment_create(template_ref="x@notanumber", pool_tag="p")
    assert not Experiment.objects.exists()


def test_all_digit_tags_are_refused(simulator) -> None:
    make_experiment()  # imports a template and a pool
    with pytest.raises(StartRefused, match="at least one letter"):
        experiment_create(template_ref="t-exp-a", pool_tag="pool-a", tag="12345")


def test_batch_start_collects_every_service_error(simulator) -> None:
    tag = make_experiment()
    result = experiments_start(tags=[tag], pause_after="bogus")
    assert result.started == []
    assert result.failed[0]["error"]["code"] == "start_refused"


def test_cancel_closes_queued_shards_and_empty_submits(simulator) -> None:
    body = {**DEMO_BODY, "sample_count": 40}
    tag = make_experiment(body=body)
    run = experiment_start(tag=tag)
    from orchestration.services.advance import run_advance

    run_advance(run_id=run.pk)  # materialize rubric_gen (40 requests)
    (batch_id,) = batches_form(provider="openai", model="gpt-4.1-mini").batch_ids
    run_cancel(run_id=run.pk)
    batch = LlmBatch.objects.get(pk=batch_id)
    assert batch.status == "canceled"
    assert batch_submit(batch_id=batch_id) == "not_claimable"
    assert set(LlmRequest.objects.values_list("status", flat=True)) == {"canceled"}
