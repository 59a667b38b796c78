"""Streaming: a 50k-row result file is never held by the adapter."""

from __future__ import annotations

import tracemalloc

import pytest

from orchestration.transport.providers import AnthropicAdapter, OpenAIAdapter
from tests.providers.conftest import anthropic_client, make_requests, openai_client, wait_done

N = 50_000


def big_responder(*, model: str, system: str | None, user: str, seed: str) -> str:
    return f"[{seed}] " + ("lorem ipsum dolor sit amet " * 24)  # ~650 chars per row


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_50k_rows_streamed_not_held(sim_factory, provider):
    sim = sim_factory(responder=big_responder)
    adapter: OpenAIAdapter | AnthropicAdapter
    if provider == "openai":
        adapter = OpenAIAdapter(openai_client(sim, timeout=120))
    else:
        adapter = AnthropicAdapter(anthropic_client(sim, timeout=120))
    info = adapter.submit_batch(
        submission_key="big", requests=iter(make_requests(N, model="m")), metadata={}
    )
    done = wait_done(adapter, info.provider_batch_id, timeout=120)
    rec = sim.state.batches[done.provider_batch_id]
    if provider == "openai":
        size = sim.state.files[done.output_file_id].size
    else:
        size = rec.results_path.stat().st_size
    assert size > 30_000_000

    count = 0
    out_chars = 0
    tracemalloc.start()
    try:
        for row in adapter.iter_results(done):
            count += 1
            out_chars += len(row.output_text or "")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == N
    assert out_chars > N * 600
    # The only O(n) state is the set of seen custom_ids (dedupe): a few MB for 50k rows.
    assert peak < size / 5, f"peak {peak} bytes while streaming a {size}-byte file"
