"""Simulator admin API, fault config parsing, submission log, replay, CLI command."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestration.simulator.faults import FaultConfigError, parse_faults
from orchestration.simulator.submissions import SubmissionLog
from orchestration.transport.providers import OpenAIAdapter
from tests.providers.conftest import make_requests, openai_client, set_faults, wait_done


def test_flat_shorthand_and_rules_normalize_alike():
    flat = parse_faults(
        {
            "row_error_rate": 0.05,
            "http_500": {"count": 3, "ops": "chat"},
            "rpm": 60,
            "expire_partial": 0.3,
        }
    )
    assert [(r.fault, r.rate, r.count, r.ops) for r in flat] == [
        ("row_error", 0.05, None, None),
        ("http_500", None, 3, ("chat",)),
        ("rpm", None, None, None),
        ("batch_expire", 1.0, None, None),
    ]
    assert flat[2].params["limit"] == 60.0
    assert flat[3].params["partial"] == 0.3
    rules = parse_faults({"faults": [{"fault": "drop", "rate": 0.5, "provider": "openai"}]})
    assert rules[0].fault == "drop_connection"
    assert rules[0].provider == "openai"


@pytest.mark.parametrize(
    "bad",
    [
        [{"fault": "nope"}],
        [{"fault": "http_500", "rate": 2}],
        [{"fault": "rpm"}],
        [{"fault": "timeout", "when": "later"}],
        [{"fault": "http_500", "provider": "azure"}],
        [{"fault": "http_500", "surprise": 1}],
        {"row_error": "lots"},
    ],
)
def test_bad_fault_specs(bad):
    with pytest.raises(FaultConfigError):
        parse_faults(bad)


def test_admin_faults_roundtrip(admin):
    view = set_faults(
        admin, [{"fault": "http_500", "count": 2, "ops": ["chat"]}], batch_duration_s=5
    )
    assert view["batch_duration_s"] == 5
    assert view["faults"] == [{"fault": "http_500", "count": 2, "ops": ["chat"], "fired": 0}]
    admin.post("/_sim/faults", json={"mode": "append", "faults": {"missing_row": 0.1}})
    assert [f["fault"] for f in admin.get("/_sim/faults").json()["faults"]] == [
        "http_500",
        "missing_row",
    ]
    resp = admin.post("/_sim/faults", json=[{"fault": "nope"}])
    assert resp.status_code == 400
    assert admin.post("/_sim/reset").json()["faults"] == []


def test_submission_log_and_stats(sim, admin, oa):
    info = oa.submit_batch(submission_key="s", requests=make_requests(30), metadata={})
    wait_done(oa, info.provider_batch_id)
    for _ in range(2):  # the same request row sent twice directly: one extra submission
        oa.direct_call(make_requests(1, start=5)[0], timeout=10)
    summary = admin.get("/_sim/submissions", params={"summary": 1}).json()
    assert summary["total"] == 32
    assert summary["unique"] == 30
    assert summary["extra_submissions"] == 2
    assert summary["duplicates"] == {"r5": 3}
    assert summary["by_kind"] == {"batch": 30, "direct": 2}
    counts = admin.get("/_sim/submissions", params={"keys": "r5,r6,r999"}).json()["counts"]
    assert counts == {"r5": 3, "r6": 1, "r999": 0}
    log = [json.loads(line) for line in admin.get("/_sim/submissions").text.splitlines()]
    assert len(log) == 32
    assert {e["batch_id"] for e in log if e["kind"] == "batch"} == {info.provider_batch_id}
    assert set(log[0]) == {"key", "provider", "kind", "batch_id", "ts"}
    stats = admin.get("/_sim/stats").json()
    assert stats["calls"]["openai.chat"] == 2
    assert stats["direct_rpm"] == 2
    assert stats["batches"] == {"openai.completed": 1}
    assert stats["responder"] == "echo_responder"


def test_submission_log_is_compact(tmp_path):
    log = SubmissionLog(tmp_path / "log.jsonl")
    log.record_many(
        (f"r{i}" for i in range(200_000)), provider="openai", kind="batch", batch_id="b"
    )
    log.record_many(
        ["r7", "h-abc", "h-abc", "custom"], provider="anthropic", kind="direct", batch_id=None
    )
    s = log.summary()
    assert s["total"] == 200_004
    assert s["extra_submissions"] == 2
    assert s["duplicates"] == {"r7": 2, "h-abc": 2}
    assert log.count("r199999") == 1
    assert log.count("r200000") == 0
    assert log.count("custom") == 1
    log.close()


def test_same_seed_replays_same_faults(sim_factory):
    outcomes = []
    for _ in range(2):
        sim = sim_factory(seed=42)
        httpx.post(
            f"{sim.url}/_sim/faults", json={"http_500": 0.3, "row_error": 0.2, "missing_row": 0.1}
        )
        oa = OpenAIAdapter(openai_client(sim, timeout=10))
        direct = []
        for req in make_requests(20):
            try:
                oa.direct_call(req, timeout=10)
                direct.append("ok")
            except Exception as exc:
                direct.append(type(exc).__name__)
        httpx.post(f"{sim.url}/_sim/faults", json={"row_error": 0.2, "missing_row": 0.1})
        info = oa.submit_batch(submission_key="x", requests=make_requests(100), metadata={})
        rows = sorted(
            (r.custom_id, r.ok) for r in oa.iter_results(wait_done(oa, info.provider_batch_id))
        )
        outcomes.append((direct, rows))
    assert outcomes[0] == outcomes[1]
    assert "ok" in outcomes[0][0]
    assert "ProviderError" in outcomes[0][0]


def test_unknown_responder_falls_back(sim_factory, caplog):
    sim = sim_factory(responder=None, responder_path="no.such.module.respond")
    stats = httpx.get(f"{sim.url}/_sim/stats").json()
    assert stats["responder"] == "generic"
    assert "not importable" in caplog.text


def test_management_command_parses_and_serves(monkeypatch, tmp_path):
    from django.core.management import call_command

    import orchestration.management.commands.provider_simulator as cmd

    seen = {}

    def fake_run_forever(config, *, on_ready=None):
        seen["config"] = config
        on_ready("http://127.0.0.1:1")

    monkeypatch.setattr(cmd, "run_forever", fake_run_forever)
    faults = tmp_path / "f.json"
    faults.write_text(
        json.dumps(
            {"seed": 9, "batch_duration_s": 3, "faults": [{"fault": "http_429", "rate": 0.1}]}
        )
    )
    call_command(
        "provider_simulator",
        "--port",
        "0",
        "--faults",
        f"@{faults}",
        "--data-dir",
        str(tmp_path / "d"),
    )
    config = seen["config"]
    assert (config.host, config.port, config.seed, config.batch_duration_s) == (
        "127.0.0.1",
        0,
        9,
        3.0,
    )
    assert config.faults[0].fault == "http_429"
    call_command(
        "provider_simulator",
        "--faults",
        '[{"fault": "drop"}]',
        "--seed",
        "1",
        "--batch-duration",
        "0.5",
    )
    assert seen["config"].batch_duration_s == 0.5
    assert seen["config"].seed == 1


def _flaky_responder(*, model: str, system: str | None, user: str, seed: str) -> str:
    if seed == "r3" or seed.startswith("h"):
        raise ValueError("responder cannot answer this")
    return f"fine {seed}"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_responder_failure_is_a_server_row_not_a_dead_batch(sim_factory, provider):
    from orchestration.transport.providers import AnthropicAdapter
    from orchestration.transport.providers.base import ErrorClass, ProviderError
    from tests.providers.conftest import anthropic_client

    sim = sim_factory(responder=_flaky_responder)
    adapter = (
        OpenAIAdapter(openai_client(sim, timeout=10))
        if provider == "openai"
        else AnthropicAdapter(anthropic_client(sim, timeout=10))
    )
    info = adapter.submit_batch(
        submission_key="f", requests=make_requests(5, model="m"), metadata={}
    )
    rows = {
        r.custom_id: r for r in adapter.iter_results(wait_done(adapter, info.provider_batch_id))
    }
    assert len(rows) == 5
    assert rows["r3"].error_class is ErrorClass.SERVER
    assert rows["r4"].ok
    with pytest.raises(ProviderError) as exc_info:
        # seeded by its request id r3, which this responder cannot answer
        adapter.direct_call(make_requests(5, model="m")[2], timeout=10)
    assert exc_info.value.error_class is ErrorClass.SERVER
