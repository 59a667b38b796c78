"""The fast chaos subset (runs in every test run): F1 once, F4, F8, F9, F11, F12, X2.

Each test drives real worker and beat processes through a four-stage run (X2: an evidence
window), strikes at a seeded moment, and requires the verifier to find nothing (PROOF.md
section 1). A failure
prints the seed: ``JUDGE_CHAOS_SEED=<seed> uv run pytest tests/chaos -k <name>`` replays it.
"""

from __future__ import annotations

import pytest

from tests.chaos import scenarios
from tests.chaos.harness import ScenarioResult

pytestmark = pytest.mark.django_db(transaction=True)


def check(result: ScenarioResult) -> None:
    print(result.line())
    for note in result.notes:
        print("  ", note)
    detail = result.report.render() if result.report else ""
    assert result.ok, f"{result.line()}\n{detail}\nnotes: {result.notes}"


def test_f1_kill9_worker_once(tmp_path, seed) -> None:
    check(scenarios.f1_kill9(tmp_path, seed, quick=True))


def test_f4_broker_flushed_mid_run(tmp_path, seed) -> None:
    check(scenarios.f4_redis(tmp_path, seed, quick=True))


def test_f8_batch_created_but_answer_lost(tmp_path, seed) -> None:
    check(scenarios.f8_unknown_outcome(tmp_path, seed, quick=True, kill=False))


def test_f9_every_message_delivered_twice(tmp_path, seed) -> None:
    check(scenarios.f9_duplicates(tmp_path, seed, quick=True))


def test_f11_poison_request_exhausts_and_stage_settles(tmp_path, seed) -> None:
    check(scenarios.f11_poison(tmp_path, seed, quick=True))


def test_f12_hundred_concurrent_starts_make_one_run(tmp_path, seed) -> None:
    check(scenarios.f12_double_start(tmp_path, seed, quick=True))


def test_x2_window_survives_kill9(tmp_path, seed) -> None:
    check(scenarios.x2_window_kill9(tmp_path, seed, quick=True))
