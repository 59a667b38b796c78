"""Bad provider output: malformed, truncated and oversized result files lose no good row.

* the line parsers (both providers) over 1,000 mutated lines each: a ResultRow, a MALFORMED
  row for a recoverable id, or None, never an exception;
* the transport end to end against the simulator: ``malformed_line`` (every variant) and
  ``truncate_results`` (a download cut midway, once or until finalize gives up), and rows
  of several megabytes: good rows are applied once, broken ones retried as new attempts.
"""

from __future__ import annotations

import pytest
from django.db.models import Count
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.models import LlmRequest
from orchestration.transport.providers._rows import parse_anthropic_line, parse_openai_line
from orchestration.transport.providers.base import ErrorClass
from orchestration.transport.services.enqueue import RequestSpec, llm_requests_enqueue
from orchestration.verify import fetch_submissions, verify_process
from tests.transport.helpers import drive_transport, enqueue_bench, sim_post

OPENAI_LINE = (
    '{"id":"batch_req_1","custom_id":"r42","response":{"status_code":200,"request_id":"x",'
    '"body":{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,'
    '"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}},"error":null}'
)
ANTHROPIC_LINE = (
    '{"custom_id":"r42","result":{"type":"succeeded","message":{"id":"m","type":"message",'
    '"role":"assistant","model":"c","content":[{"type":"text","text":"hello"}],'
    '"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}}}'
)


@st.composite
def damaged(draw: st.DrawFn, line: str) -> str:
    kind = draw(st.sampled_from(["cut", "flip", "insert", "dup", "replace_value", "same"]))
    if kind == "cut":
        return line[: draw(st.integers(0, len(line)))]
    if kind == "flip":
        i = draw(st.integers(0, len(line) - 1))
        return line[:i] + draw(st.characters()) + line[i + 1 :]
    if kind == "insert":
        i = draw(st.integers(0, len(line)))
        return line[:i] + draw(st.text(max_size=20)) + line[i:]
    if kind == "dup":
        return line + line
    if kind == "replace_value":
        return line.replace(
            '"hello"', draw(st.sampled_from(["null", "42", "[]", "{}", '"' + "x" * 10_000 + '"']))
        )
    return line


@settings(max_examples=1000, deadline=None)
@given(data=st.data(), provider=st.sampled_from(["openai", "anthropic"]))
def test_result_line_parsers_never_raise(data: st.DataObject, provider: str) -> None:
    line = OPENAI_LINE if provider == "openai" else ANTHROPIC_LINE
    parse = parse_openai_line if provider == "openai" else parse_anthropic_line
    text = data.draw(damaged(line))
    row = parse(text)
    if row is None:
        return
    assert row.custom_id
    if row.ok:
        assert isinstance(row.output_text, str)
    else:
        assert row.error_class is not None
        assert row.error_message


pytestmark_db = pytest.mark.django_db(transaction=True)


def _one_success_per_key() -> None:
    dupes = (
        LlmRequest.objects.filter(status="succeeded")
        .values("custom_key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not dupes.exists()


@pytestmark_db
@pytest.mark.parametrize("variant", ["truncate", "garbage", "mixed"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_malformed_lines_keep_good_rows(
    simulator, eager_celery, variant: str, provider: str
) -> None:
    sim_post(
        f"{simulator.url}/_sim/faults",
        {"faults": [{"fault": "malformed_line", "rate": 0.2, "variant": variant}]},
    )
    n = 200
    enqueue_bench(n, provider=provider)
    drive_transport()
    assert LlmRequest.objects.filter(status="succeeded").count() == n
    _one_success_per_key()
    broken = LlmRequest.objects.filter(attempt_index=1, status="failed").count()
    assert 0 < broken < n  # rate 0.2: some lines broken, most good
    # Every good row of the first file was applied on attempt 1; only broken rows retried.
    first_ok = LlmRequest.objects.filter(attempt_index=1, status="succeeded").count()
    assert first_ok == n - broken
    assert LlmRequest.objects.filter(attempt_index=2).count() == broken
    failed = set(LlmRequest.objects.filter(status="failed").values_list("error_class", flat=True))
    assert failed <= {ErrorClass.MALFORMED.value, ErrorClass.MISSING.value}
    report = verify_process(
        process="bench:1", terminal=True, submissions=fetch_submissions(simulator.url)
    )
    assert report.ok, report.render()


def _drive_fast_forward(timeout: float = 240.0) -> None:
    """Like ``drive_transport``, but also makes a finalize retry due at once (its backoff
    is 5 s x attempts; waiting it out adds nothing to what is tested)."""
    import time

    from django.utils import timezone

    from orchestration.models import LlmBatch
    from orchestration.transport.services.tick import tick_run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_run()
        if not LlmRequest.objects.filter(status__in=["pending", "in_flight"]).exists():
            return
        LlmRequest.objects.filter(status="pending").update(next_attempt_at="2000-01-01T00:00Z")
        LlmBatch.objects.filter(
            status__in=["running", "finalizing"],
            lease_owner__isnull=True,
            next_poll_at__gt=timezone.now(),
        ).update(next_poll_at="2000-01-01T00:00Z")
        time.sleep(0.05)
    raise AssertionError("transport did not settle")


@pytestmark_db
@pytest.mark.parametrize("cuts", [1, 5])
def test_truncated_download_keeps_applied_chunks(simulator, eager_celery, cuts: int) -> None:
    """A download cut at half: re-streamed (cuts=1) or given up after 5 tries (cuts=5); the
    chunks applied before the cut stay applied exactly once."""
    sim_post(
        f"{simulator.url}/_sim/faults",
        {"faults": [{"fault": "truncate_results", "count": cuts, "fraction": 0.5}]},
    )
    n = 2500  # > FINALIZE_CHUNK: the first chunk is committed before the cut
    enqueue_bench(n, provider="openai")
    from policies.models import Policy

    Policy.objects.create(scope="global", key="default", max_batch_size=5000)
    _drive_fast_forward()
    assert LlmRequest.objects.filter(status="succeeded").count() == n
    _one_success_per_key()
    first_ok = LlmRequest.objects.filter(attempt_index=1, status="succeeded").count()
    if cuts == 1:
        assert first_ok == n  # re-streamed: nothing needed a second attempt
    else:
        assert 1000 <= first_ok < n  # gave up: applied chunks kept, the rest retried
        assert LlmRequest.objects.filter(attempt_index=2).count() == n - first_ok
    report = verify_process(
        process="bench:1", terminal=True, submissions=fetch_submissions(simulator.url)
    )
    assert report.ok, report.render()


@pytestmark_db
def test_oversized_rows_are_stored_whole(tmp_path) -> None:
    """Rows of several MB (a model that talks too much) next to normal ones."""
    from django.test import override_settings

    from orchestration.simulator.config import SimulatorConfig
    from orchestration.simulator.server import run_in_thread
    from orchestration.transport.providers import reset_clients

    big = 3_000_000

    def respond(*, model: str, system: str | None, user: str, seed: str) -> str:
        return ("y" * big) if user.endswith("7") else f"ok {user}"

    handle = run_in_thread(SimulatorConfig(seed=3, data_dir=tmp_path / "sim", responder=respond))
    reset_clients()
    try:
        with override_settings(JUDGE_SIMULATOR_URL=handle.url):
            from judge_project.celery import app

            app.conf.task_always_eager = True
            try:
                specs = [
                    RequestSpec(
                        custom_key=f"bench:{i}", process="bench:1", stage="bench", provider="openai",
                        model="gpt-4.1-mini", provider_model="gpt-4.1-mini-2025-04-14",
                        user_prompt=f"request {i}", max_output_tokens=2_000_000,
                        params={"backoff_s": 0.0, "jitter": 0.0},
                    )
                    for i in range(60)
                ]  # fmt: skip
                llm_requests_enqueue(specs=specs)
                drive_transport(timeout=240)
            finally:
                app.conf.task_always_eager = False
            ok = LlmRequest.objects.filter(status="succeeded")
            assert ok.count() == 60
            sizes = {
                len(t)
                for t in ok.filter(custom_key__endswith="7").values_list("output_text", flat=True)
            }
            assert min(sizes) >= big * 0.9  # cut only by the simulator's max_tokens accounting
            assert LlmRequest.objects.filter(attempt_index=1, status="succeeded").count() == 60
            report = verify_process(
                process="bench:1", terminal=True, submissions=fetch_submissions(handle.url)
            )
            assert report.ok, report.render()
    finally:
        handle.stop()
        reset_clients()
