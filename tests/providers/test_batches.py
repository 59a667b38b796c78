"""Batch round trips and recovery through the real SDK adapters against the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anthropic
import pytest

from orchestration.transport.providers.base import BatchState, ErrorClass, ProviderError
from tests.providers.conftest import make_requests, model_for, set_faults, wait_done


def test_round_trip_1000(adapter):
    reqs = make_requests(1000, model=model_for(adapter))
    info = adapter.submit_batch(
        submission_key="sk-rt-1", requests=iter(reqs), metadata={"run": "7"}
    )
    assert info.state is BatchState.RUNNING
    done = wait_done(adapter, info.provider_batch_id)
    assert done.state is BatchState.COMPLETED
    assert done.has_results
    rows = list(adapter.iter_results(done))
    ids = [r.custom_id for r in rows]
    assert len(ids) == 1000
    assert set(ids) == {r.custom_id for r in reqs}
    assert all(r.ok for r in rows)
    by_id = {r.custom_id: r for r in rows}
    assert by_id["r17"].output_text.startswith("ECHO[r17] Question number 17")
    assert by_id["r17"].input_tokens > 0
    assert by_id["r17"].output_tokens > 0
    stats = adapter.last_stream_stats
    assert (stats.rows, stats.ok, stats.malformed, stats.unrecoverable, stats.complete) == (
        1000,
        1000,
        0,
        0,
        True,
    )


def test_openai_batch_carries_submission_key_metadata(oa):
    info = oa.submit_batch(
        submission_key="shard:42:a1", requests=make_requests(3), metadata={"run": "9"}
    )
    assert info.metadata == {"run": "9", "submission_key": "shard:42:a1"}
    assert info.input_file_id


def test_openai_find_batch_after_unknown_outcome(oa, admin):
    """F8: the provider created the batch, the client never heard (connection dropped)."""
    intent = datetime.now(UTC)
    set_faults(
        admin,
        [{"fault": "drop_connection", "when": "after", "count": 1, "ops": ["batches_create"]}],
    )
    with pytest.raises(ProviderError) as exc_info:
        oa.submit_batch(submission_key="shard:1:x", requests=make_requests(5), metadata={})
    assert exc_info.value.error_class is ErrorClass.TIMEOUT
    found = oa.find_batch(submission_key="shard:1:x", created_after=intent, custom_ids=frozenset())
    assert found is not None
    assert found.metadata["submission_key"] == "shard:1:x"
    assert (
        oa.find_batch(submission_key="shard:2:x", created_after=intent, custom_ids=frozenset())
        is None
    )
    # Nothing created after the intent (beyond clock-skew slack) -> certainly never created.
    later = intent + timedelta(hours=1)
    assert (
        oa.find_batch(submission_key="shard:1:x", created_after=later, custom_ids=frozenset())
        is None
    )


def test_openai_find_batch_pages_newest_first(sim):
    from orchestration.transport.providers import OpenAIAdapter
    from tests.providers.conftest import openai_client

    oa = OpenAIAdapter(openai_client(sim, timeout=30), find_page_size=2)
    intent = datetime.now(UTC)
    for k in range(7):
        oa.submit_batch(
            submission_key=f"key{k}", requests=make_requests(2, start=10 * k + 1), metadata={}
        )
    found = oa.find_batch(submission_key="key0", created_after=intent, custom_ids=frozenset())
    assert found is not None
    assert found.metadata["submission_key"] == "key0"
    assert sim.state.calls["openai.batches_list"] == 4  # 7 batches, 2 per page


def test_anthropic_find_batch_by_custom_ids(an, admin):
    intent = datetime.now(UTC)
    reqs = make_requests(6, start=100, model="claude-haiku-4-5")
    # Same size, other ids: must not be adopted.
    an.submit_batch(
        submission_key="other",
        requests=make_requests(6, start=200, model="claude-haiku-4-5"),
        metadata={},
    )
    set_faults(
        admin,
        [{"fault": "drop_connection", "when": "after", "count": 1, "ops": ["batches_create"]}],
    )
    with pytest.raises(ProviderError) as exc_info:
        an.submit_batch(submission_key="mine", requests=reqs, metadata={})
    assert exc_info.value.error_class is ErrorClass.TIMEOUT
    ids = frozenset(r.custom_id for r in reqs)
    found = an.find_batch(submission_key="mine", created_after=intent, custom_ids=ids)
    assert found is not None
    assert sum(found.request_counts.values()) == 6
    assert {r.custom_id for r in an.iter_results(found)} == ids
    # A shard that was never submitted.
    never = frozenset(f"r{i}" for i in range(900, 906))
    assert an.find_batch(submission_key="x", created_after=intent, custom_ids=never) is None


def test_anthropic_find_batch_undecided_while_running(sim_factory):
    from orchestration.transport.providers import AnthropicAdapter
    from tests.providers.conftest import anthropic_client

    sim = sim_factory(batch_duration_s=60)
    an = AnthropicAdapter(anthropic_client(sim, timeout=30))
    intent = datetime.now(UTC)
    reqs = make_requests(4, model="claude-haiku-4-5")
    an.submit_batch(submission_key="k", requests=reqs, metadata={})
    with pytest.raises(ProviderError) as exc_info:
        an.find_batch(
            submission_key="k",
            created_after=intent,
            custom_ids=frozenset(r.custom_id for r in reqs),
        )
    assert exc_info.value.error_class is ErrorClass.TIMEOUT
    assert "undecided" in exc_info.value.message
    # A candidate of another size is not a reason to wait.
    assert (
        an.find_batch(submission_key="k", created_after=intent, custom_ids=frozenset({"r1"}))
        is None
    )


def test_anthropic_custom_id_pattern(an, sim):
    from orchestration.transport.providers.base import ChatRequest
    from orchestration.transport.providers.errors import classify_exception
    from tests.providers.conftest import anthropic_client

    bad = ChatRequest(
        custom_id="run:1:score_gen",
        model="claude-haiku-4-5",
        system=None,
        user="x",
        max_output_tokens=10,
    )
    with pytest.raises(ProviderError) as exc_info:
        an.submit_batch(submission_key="k", requests=[bad], metadata={})
    assert exc_info.value.error_class is ErrorClass.PERMANENT
    # The simulator itself rejects it like the real API (400 invalid_request_error).
    client = anthropic_client(sim)
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
    }
    for requests in (
        [{"custom_id": "run:1:score_gen", "params": params}],
        [{"custom_id": "a" * 65, "params": params}],
        [{"custom_id": "dup", "params": params}, {"custom_id": "dup", "params": params}],
    ):
        with pytest.raises(anthropic.BadRequestError) as raw:
            client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        err = classify_exception(raw.value)
        assert err.error_class is ErrorClass.PERMANENT
        assert err.status_code == 400
    assert sim.state.submissions.total == 0


def test_batch_progresses_by_time(sim_factory):
    from orchestration.transport.providers import OpenAIAdapter
    from tests.providers.conftest import openai_client

    sim = sim_factory(batch_duration_s=1.0)
    oa = OpenAIAdapter(openai_client(sim, timeout=30))
    info = oa.submit_batch(submission_key="t", requests=make_requests(3), metadata={})
    assert info.raw_status == "validating"
    seen = set()
    final = None
    for _ in range(200):
        final = oa.get_batch(info.provider_batch_id)
        seen.add(final.raw_status)
        if final.state is not BatchState.RUNNING:
            break
        import time

        time.sleep(0.02)
    assert final is not None
    assert final.state is BatchState.COMPLETED
    assert {"in_progress", "completed"} <= seen


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_cancel_yields_partial_results(sim_factory, provider):
    from orchestration.transport.providers import AnthropicAdapter, OpenAIAdapter
    from tests.providers.conftest import anthropic_client, openai_client

    sim = sim_factory(batch_duration_s=60)
    adapter = (
        OpenAIAdapter(openai_client(sim, timeout=30))
        if provider == "openai"
        else AnthropicAdapter(anthropic_client(sim, timeout=30))
    )
    reqs = make_requests(10, model="m")
    info = adapter.submit_batch(submission_key="c", requests=reqs, metadata={})
    after = adapter.cancel_batch(info.provider_batch_id)
    assert after.state is BatchState.RUNNING  # cancelling / canceling
    done = wait_done(adapter, info.provider_batch_id)
    expected_state = BatchState.CANCELED if provider == "openai" else BatchState.COMPLETED
    assert done.state is expected_state
    rows = list(adapter.iter_results(done))
    assert {r.custom_id for r in rows} == {r.custom_id for r in reqs}
    assert all(r.error_class is ErrorClass.BATCH for r in rows if not r.ok)
    # Canceling a finished batch is a no-op, not an error.
    assert adapter.cancel_batch(info.provider_batch_id).provider_batch_id == info.provider_batch_id
