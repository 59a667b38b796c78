"""The PostgreSQL fast paths of the transport's hot SQL, checked against their portable twins.

``outcomes_apply`` marks rows and computes cost in one UPDATE on PostgreSQL; ``_cost`` does the
same in Python for the portable path. ``llm_requests_enqueue`` COPYs straight into the table
and falls back to ``ON CONFLICT DO NOTHING`` when a key already exists.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from orchestration.models import LlmBatch, LlmRequest, RunEvent
from orchestration.transport.bench_handler import REJECT_MARKER
from orchestration.transport.services.apply import Outcome, _cost, outcomes_apply
from tests.transport.helpers import enqueue_bench

pytestmark = pytest.mark.django_db(transaction=True)

PARAMS: list[dict[str, Any]] = [
    {},
    {"input_price_per_mtok": 2.0, "output_price_per_mtok": 8.0},
    {"input_price_per_mtok": 2.0, "output_price_per_mtok": 8.0, "batch_discount": 0.25},
    {"input_price_per_mtok": 3, "output_price_per_mtok": 15, "batch_discount": 0},
    {"input_price_per_mtok": "2.0", "output_price_per_mtok": True, "batch_discount": None},
]


def _in_flight(n: int, *, route: str) -> tuple[LlmBatch, list[int]]:
    enqueue_bench(n)
    batch = LlmBatch.objects.create(
        provider="openai", model="gpt-4.1-mini", status="finalizing", batch_key=f"k{route}{n}"
    )
    LlmRequest.objects.update(status="in_flight", route=route, batch=batch)
    return batch, list(LlmRequest.objects.order_by("id").values_list("id", flat=True))


@pytest.mark.parametrize("route", ["batch", "direct"])
def test_sql_cost_equals_python_cost(route: str) -> None:
    batch, ids = _in_flight(len(PARAMS), route=route)
    for rid, params in zip(ids, PARAMS, strict=True):
        LlmRequest.objects.filter(pk=rid).update(params=params)
    outcomes = [
        Outcome(request_id=rid, ok=True, output_text="ok", input_tokens=1234, output_tokens=567)
        for rid in ids
    ]
    stats = outcomes_apply(outcomes=outcomes, batch_id=batch.pk)
    assert stats.succeeded == len(PARAMS)
    stored = dict(LlmRequest.objects.values_list("id", "cost_usd"))
    expected = [_cost(p, 1234, 567, batch=route == "batch") for p in PARAMS]
    for rid, want in zip(ids, expected, strict=True):
        assert math.isclose(stored[rid], want, rel_tol=1e-12, abs_tol=1e-15), (rid, want)
    assert math.isclose(stats.cost_usd, sum(expected), rel_tol=1e-12)
    # The discount matters: a priced row costs less in a batch than direct.
    assert expected[1] == pytest.approx(
        (1234 * 2.0 + 567 * 8.0) / 1e6 * (0.5 if route == "batch" else 1.0)
    )


def test_rejected_rows_end_failed_with_retry_and_reason() -> None:
    batch, ids = _in_flight(4, route="batch")
    outcomes = [
        Outcome(request_id=ids[0], ok=True, output_text="fine", input_tokens=5, output_tokens=2),
        Outcome(request_id=ids[1], ok=True, output_text=f"x {REJECT_MARKER} y", input_tokens=5),
        Outcome(request_id=ids[2], ok=False, error_class="server", error_message="boom"),
        # ids[3] gets no outcome: it must stay in flight, untouched.
    ]
    stats = outcomes_apply(outcomes=outcomes, batch_id=batch.pk)
    assert (stats.succeeded, stats.failed, stats.retried) == (1, 2, 2)
    rows = {r.pk: r for r in LlmRequest.objects.filter(pk__in=ids)}
    assert rows[ids[0]].status == "succeeded"
    assert rows[ids[0]].error_class == ""
    assert rows[ids[1]].status == "failed"
    assert rows[ids[1]].error_class == "parse"
    assert REJECT_MARKER in (rows[ids[1]].output_text or "")  # raw output kept
    assert rows[ids[2]].status == "failed"
    assert rows[ids[2]].error_message == "boom"
    assert rows[ids[3]].status == "in_flight"
    retries = LlmRequest.objects.filter(attempt_index=2).values_list("custom_key", flat=True)
    assert sorted(retries) == sorted([rows[ids[1]].custom_key, rows[ids[2]].custom_key])
    assert RunEvent.objects.filter(event_type="request_retry_scheduled").count() == 2


def test_reapplying_a_chunk_is_a_no_op() -> None:
    batch, ids = _in_flight(3, route="batch")
    outcomes = [Outcome(request_id=rid, ok=True, output_text=f"out {rid}") for rid in ids]
    first = outcomes_apply(outcomes=outcomes, batch_id=batch.pk)
    again = outcomes_apply(
        outcomes=[Outcome(request_id=rid, ok=False, error_class="server") for rid in ids],
        batch_id=batch.pk,
    )
    assert (first.succeeded, again.applied, again.skipped) == (3, 0, 3)
    assert set(LlmRequest.objects.values_list("status", flat=True)) == {"succeeded"}
    assert LlmRequest.objects.count() == 3  # no retry rows from the stale failure


def test_other_batch_or_lease_is_not_touched() -> None:
    batch, ids = _in_flight(2, route="direct")
    LlmRequest.objects.filter(pk=ids[0]).update(lease_owner="runner-a")
    LlmRequest.objects.filter(pk=ids[1]).update(lease_owner="runner-b")
    stats = outcomes_apply(
        outcomes=[Outcome(request_id=rid, ok=True, output_text="x") for rid in ids],
        lease_owner="runner-a",
    )
    assert (stats.succeeded, stats.skipped) == (1, 1)
    other = outcomes_apply(
        outcomes=[Outcome(request_id=ids[1], ok=True, output_text="x")], batch_id=batch.pk + 1
    )
    assert other.skipped == 1
    assert LlmRequest.objects.get(pk=ids[1]).status == "in_flight"


def test_enqueue_copy_falls_back_on_existing_keys() -> None:
    assert enqueue_bench(50) == 50
    # Overlapping range: the direct COPY hits the unique index, rolls back to its savepoint,
    # and the ON CONFLICT path inserts only the 25 new keys, inside the same transaction.
    assert enqueue_bench(50, start=25) == 25
    assert LlmRequest.objects.count() == 75
    assert LlmRequest.objects.values("custom_key").distinct().count() == 75
