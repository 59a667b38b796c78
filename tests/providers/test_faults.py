"""Each injected fault reaches the engine as the right ErrorClass / row behaviour."""

from __future__ import annotations

import time

import pytest

from orchestration.transport.providers import AnthropicAdapter, OpenAIAdapter
from orchestration.transport.providers.base import BatchState, ErrorClass, ProviderError, ResultRow
from tests.providers.conftest import (
    anthropic_client,
    make_requests,
    model_for,
    openai_client,
    set_faults,
    wait_done,
)

SMALL_TIMEOUT = 0.5


def _drain(rows, sink: list[ResultRow]) -> None:
    for row in rows:
        sink.append(row)


def _adapter(sim, provider, timeout=SMALL_TIMEOUT):
    if provider == "openai":
        return OpenAIAdapter(openai_client(sim, timeout=timeout))
    return AnthropicAdapter(anthropic_client(sim, timeout=timeout))


def _direct(adapter, custom_id="r1", timeout=SMALL_TIMEOUT):
    req = make_requests(1, model=model_for(adapter))[0]
    req = type(req)(
        custom_id=custom_id,
        model=req.model,
        system=req.system,
        user=req.user,
        max_output_tokens=req.max_output_tokens,
    )
    return adapter.direct_call(req, timeout=timeout)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_direct_call_ok(sim, provider):
    adapter = _adapter(sim, provider, timeout=10)
    row = _direct(adapter, timeout=10)
    assert row.ok
    assert row.custom_id == "r1"
    # Direct calls are seeded by the engine's request id (x-judge-custom-id), like batch rows.
    assert row.output_text.startswith("ECHO[r1]")
    assert row.input_tokens > 0
    assert row.output_tokens > 0
    assert sim.state.submissions.count("r1") == 1  # logged under x-judge-custom-id


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("rule", "expected", "retry_after"),
    [
        ({"fault": "http_429", "retry_after": 3}, ErrorClass.RATE_LIMIT, 3.0),
        ({"fault": "http_500"}, ErrorClass.SERVER, None),
        ({"fault": "http_529"}, ErrorClass.SERVER, None),
        ({"fault": "http_503"}, ErrorClass.SERVER, None),
        ({"fault": "drop_connection"}, ErrorClass.TIMEOUT, None),
        ({"fault": "quota"}, ErrorClass.QUOTA, None),
    ],
)
def test_direct_call_faults(sim, admin, provider, rule, expected, retry_after):
    adapter = _adapter(sim, provider)
    set_faults(admin, [{**rule, "count": 1, "provider": provider}])
    with pytest.raises(ProviderError) as exc_info:
        _direct(adapter)
    err = exc_info.value
    assert err.error_class is expected, err.message
    if retry_after is not None:
        assert err.retry_after == pytest.approx(retry_after)
    # A burst of one: the next call succeeds, and only it was accepted (logged).
    assert _direct(adapter).ok
    assert sim.state.submissions.count("r1") == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_timeout_fires_within_client_timeout(sim, admin, provider):
    adapter = _adapter(sim, provider)
    set_faults(admin, [{"fault": "timeout", "sleep_s": 30, "count": 1}])
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as exc_info:
        _direct(adapter, timeout=SMALL_TIMEOUT)
    assert exc_info.value.error_class is ErrorClass.TIMEOUT
    assert time.monotonic() - t0 < SMALL_TIMEOUT + 1.5


def test_fault_scoped_to_provider_and_op(sim, admin):
    set_faults(admin, [{"fault": "http_500", "provider": "anthropic", "ops": ["messages"]}])
    assert _direct(_adapter(sim, "openai")).ok
    with pytest.raises(ProviderError):
        _direct(_adapter(sim, "anthropic"))
    # Batches of the same provider are not affected.
    an = _adapter(sim, "anthropic", timeout=10)
    info = an.submit_batch(submission_key="k", requests=make_requests(2, model="c"), metadata={})
    assert info.state is BatchState.RUNNING


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_rpm_limit(sim, admin, provider):
    adapter = _adapter(sim, provider)
    set_faults(admin, {"rpm": 2})
    assert _direct(adapter, "r1").ok
    assert _direct(adapter, "r2").ok
    with pytest.raises(ProviderError) as exc_info:
        _direct(adapter, "r3")
    err = exc_info.value
    assert err.error_class is ErrorClass.RATE_LIMIT
    assert err.retry_after is not None
    assert 0 < err.retry_after <= 60
    assert sim.state.submissions.count("r3") == 0


def test_tpm_limit(sim, admin):
    adapter = _adapter(sim, "openai")
    set_faults(admin, [{"fault": "tpm", "limit": 300}])  # one call ~ 15 prompt + 200 max tokens
    assert _direct(adapter, "r1").ok
    with pytest.raises(ProviderError) as exc_info:
        _direct(adapter, "r2")
    assert exc_info.value.error_class is ErrorClass.RATE_LIMIT


def test_openai_enqueued_token_limit_fails_batch_as_quota(sim, admin):
    oa = _adapter(sim, "openai", timeout=10)
    set_faults(admin, [{"fault": "enqueued_token_limit", "limit": 100}])
    info = oa.submit_batch(submission_key="q", requests=make_requests(50), metadata={})
    done = wait_done(oa, info.provider_batch_id)
    assert done.state is BatchState.FAILED
    assert done.error_class is ErrorClass.QUOTA
    assert any(e.startswith("token_limit_exceeded") for e in done.errors)
    assert list(oa.iter_results(done)) == []
    assert sim.state.submissions.total == 0  # refused batches are not accepted rows


def test_anthropic_enqueued_token_limit_is_quota(sim_factory):
    sim = sim_factory(batch_duration_s=60)
    an = _adapter(sim, "anthropic", timeout=10)
    import httpx

    httpx.post(f"{sim.url}/_sim/faults", json=[{"fault": "enqueued_token_limit", "limit": 400}])
    an.submit_batch(submission_key="a", requests=make_requests(20, model="c"), metadata={})
    with pytest.raises(ProviderError) as exc_info:
        an.submit_batch(
            submission_key="b", requests=make_requests(20, start=50, model="c"), metadata={}
        )
    assert exc_info.value.error_class is ErrorClass.QUOTA
    assert exc_info.value.retry_after == pytest.approx(60)


def test_openai_batch_failed(sim, admin):
    oa = _adapter(sim, "openai", timeout=10)
    set_faults(admin, {"fail": 1.0})
    info = oa.submit_batch(submission_key="f", requests=make_requests(5), metadata={})
    done = wait_done(oa, info.provider_batch_id)
    assert done.state is BatchState.FAILED
    assert done.error_class is ErrorClass.BATCH
    assert not done.has_results


def test_anthropic_batch_fail_errors_every_row(sim, admin):
    an = _adapter(sim, "anthropic", timeout=10)
    set_faults(admin, {"fail": 1.0})
    info = an.submit_batch(submission_key="f", requests=make_requests(5, model="c"), metadata={})
    rows = list(an.iter_results(wait_done(an, info.provider_batch_id)))
    assert len(rows) == 5
    assert all(not r.ok and r.error_class is ErrorClass.SERVER for r in rows)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_expired_with_partial_output_yields_only_present_rows(sim, admin, provider):
    adapter = _adapter(sim, provider, timeout=10)
    set_faults(admin, [{"fault": "batch_expire", "partial": 0.4, "rest": "omit"}])
    reqs = make_requests(50, model="m")
    info = adapter.submit_batch(submission_key="e", requests=reqs, metadata={})
    done = wait_done(adapter, info.provider_batch_id)
    if provider == "openai":
        assert done.state is BatchState.EXPIRED
        assert done.error_class is ErrorClass.BATCH
    rows = list(adapter.iter_results(done))
    assert len(rows) == 20
    assert all(r.ok for r in rows)
    assert {r.custom_id for r in rows} == {r.custom_id for r in reqs[:20]}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_expired_rest_reported_as_batch_rows(sim, admin, provider):
    adapter = _adapter(sim, provider, timeout=10)
    set_faults(admin, {"expire_partial": 0.5})
    info = adapter.submit_batch(
        submission_key="e", requests=make_requests(10, model="m"), metadata={}
    )
    rows = list(adapter.iter_results(wait_done(adapter, info.provider_batch_id)))
    assert len(rows) == 10
    assert sum(r.ok for r in rows) == 5
    assert {r.error_class for r in rows if not r.ok} == {ErrorClass.BATCH}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, ErrorClass.SERVER), (400, ErrorClass.PERMANENT), (429, ErrorClass.RATE_LIMIT)],
)
def test_row_errors(sim, admin, provider, status, expected):
    adapter = _adapter(sim, provider, timeout=10)
    set_faults(admin, [{"fault": "row_error", "rate": 0.3, "status_code": status}])
    reqs = make_requests(100, model="m")
    info = adapter.submit_batch(submission_key="r", requests=reqs, metadata={})
    rows = list(adapter.iter_results(wait_done(adapter, info.provider_batch_id)))
    assert len(rows) == 100
    bad = [r for r in rows if not r.ok]
    assert 10 <= len(bad) <= 50
    assert {r.error_class for r in bad} == {expected}
    assert all(r.raw for r in bad)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_missing_and_duplicate_rows(sim, admin, provider):
    adapter = _adapter(sim, provider, timeout=10)
    set_faults(admin, {"missing_row": 0.1, "duplicate_row": 0.2})
    reqs = make_requests(200, model="m")
    info = adapter.submit_batch(submission_key="md", requests=reqs, metadata={})
    rows = list(adapter.iter_results(wait_done(adapter, info.provider_batch_id)))
    ids = [r.custom_id for r in rows]
    assert len(ids) == len(set(ids))  # duplicates dropped, first wins
    missing = {r.custom_id for r in reqs} - set(ids)
    assert 5 <= len(missing) <= 40  # the engine marks these MISSING and retries them
    stats = adapter.last_stream_stats
    assert stats.duplicates > 10
    assert stats.rows == len(ids)
    assert stats.complete


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_malformed_lines(sim, admin, provider):
    adapter = _adapter(sim, provider, timeout=10)
    set_faults(
        admin,
        [
            {"fault": "malformed_line", "count": 3, "variant": "truncate"},
            {"fault": "malformed_line", "count": 2, "variant": "garbage"},
        ],
    )
    reqs = make_requests(20, model="m")
    info = adapter.submit_batch(submission_key="ml", requests=reqs, metadata={})
    rows = list(adapter.iter_results(wait_done(adapter, info.provider_batch_id)))
    stats = adapter.last_stream_stats
    assert stats.malformed == 3  # custom_id recovered: yielded as MALFORMED rows
    assert stats.unrecoverable == 2  # skipped; their ids are simply absent
    assert len(rows) == 18
    bad = [r for r in rows if not r.ok]
    assert len(bad) == 3
    assert {r.error_class for r in bad} == {ErrorClass.MALFORMED}
    assert {r.custom_id for r in bad} <= {r.custom_id for r in reqs}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_malformed_output_is_ok_row_with_garbage_text(sim, admin, provider):
    adapter = _adapter(sim, provider, timeout=10)
    set_faults(admin, [{"fault": "malformed_output", "count": 2}])
    info = adapter.submit_batch(
        submission_key="mo", requests=make_requests(5, model="m"), metadata={}
    )
    rows = list(adapter.iter_results(wait_done(adapter, info.provider_batch_id)))
    garbled = [r for r in rows if "garbled" in (r.output_text or "")]
    assert len(rows) == 5
    assert len(garbled) == 2
    assert all(r.ok for r in rows)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_truncated_results_raise_timeout_after_good_rows(sim, admin, provider):
    """Documented behaviour: rows before the cut are yielded, then ProviderError(TIMEOUT);
    ``last_stream_stats.complete`` stays False; a later re-download gets everything."""
    adapter = _adapter(sim, provider, timeout=10)
    reqs = make_requests(200, model="m")
    info = adapter.submit_batch(submission_key="tr", requests=reqs, metadata={})
    done = wait_done(adapter, info.provider_batch_id)
    set_faults(admin, [{"fault": "truncate_results", "fraction": 0.5, "count": 1}])
    got: list[ResultRow] = []
    with pytest.raises(ProviderError) as exc_info:
        _drain(adapter.iter_results(done), got)
    assert exc_info.value.error_class is ErrorClass.TIMEOUT
    assert 50 < len(got) < 150
    assert all(r.ok for r in got)
    assert adapter.last_stream_stats.complete is False
    again = list(adapter.iter_results(done))
    assert len(again) == 200
    assert adapter.last_stream_stats.complete


def test_openai_upload_dropped_is_timeout(sim, admin):
    oa = _adapter(sim, "openai", timeout=10)
    set_faults(admin, [{"fault": "drop_connection", "ops": ["files"], "count": 1}])
    with pytest.raises(ProviderError) as exc_info:
        oa.submit_batch(submission_key="u", requests=make_requests(3), metadata={})
    assert exc_info.value.error_class is ErrorClass.TIMEOUT
    assert sim.state.submissions.total == 0


def test_openai_rejected_batch_create_deletes_upload(sim, admin):
    oa = _adapter(sim, "openai", timeout=10)
    set_faults(admin, [{"fault": "http_429", "ops": ["batches_create"], "count": 1}])
    with pytest.raises(ProviderError) as exc_info:
        oa.submit_batch(submission_key="u", requests=make_requests(3), metadata={})
    assert exc_info.value.error_class is ErrorClass.RATE_LIMIT
    assert sim.state.files == {}
