"""``manage.py windows``: create, collect, status/watch JSON and exit codes, pool, plan."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from evidence.models import Evidence, Pool, WindowRun
from evidence.services.errors import EvidenceInvalidState
from evidence.services.windows import window_run_cancel
from tests.evidence.conftest import drive


def run_cmd(*args: str) -> str:
    out = StringIO()
    call_command("windows", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def watch(*args: str) -> tuple[int, list[dict]]:
    out = StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("windows", "watch", *args, stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return int(exc.value.code), lines


def create(tag: str, country: str = "Hungary", limit: int = 3, *extra: str) -> str:
    return run_cmd(
        "create", tag, "--query", "fascism", "--country", country, "--start", "2026-01-01",
        "--end", "2026-01-31", "--limit", str(limit), *extra,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_create_collect_status_watch(simulator, eager_celery) -> None:
    assert "created window w-a" in create("w-a")
    first = json.loads(run_cmd("collect", "w-a", "--json"))
    second = json.loads(run_cmd("collect", "w-a", "--json"))
    assert first["window_run_id"] == second["window_run_id"]
    assert WindowRun.objects.count() == 1
    status = json.loads(run_cmd("status", "w-a", "--json"))
    assert status["window_run_id"] == first["window_run_id"]
    assert status["status"] == "running"
    assert status["current_stage"] == "l1_cleaned"
    assert [s["stage"] for s in status["stages"]] == [
        "l1_cleaned",
        "l2_neutralized",
        "l3_abstracted",
    ]
    drive(first["window_run_id"])
    code, frames = watch("w-a", "--json", "--interval", "0.05")
    assert code == 0
    final = frames[-1]
    assert final["status"] == "completed"
    assert final["terminal"] is True
    for stage in final["stages"]:
        assert {"stage", "total", "completed", "failed", "pending", "skipped"} <= stage.keys()
        assert (stage["total"], stage["completed"], stage["failed"], stage["pending"]) == (
            3,
            3,
            0,
            0,
        )
    assert Evidence.objects.count() == 3
    text = run_cmd("status", str(first["window_run_id"]))
    assert "status=completed" in text
    assert "l3_abstracted" in text
    assert "w-a" in run_cmd("list")


@pytest.mark.django_db(transaction=True)
def test_watch_exit_codes_for_failed_and_canceled(simulator, eager_celery) -> None:
    run_cmd(
        "create", "w-err", "--query", "x __error__", "--country", "Hungary",
        "--start", "2026-01-01", "--end", "2026-01-31",
    )  # fmt: skip
    run_cmd("collect", "w-err")
    code, frames = watch("w-err", "--json", "--interval", "0.05")
    assert code == 1
    assert frames[-1]["status"] == "failed"
    assert "search failed" in frames[-1]["last_error"]

    create("w-cancel")
    run = WindowRun.objects.get(
        pk=json.loads(run_cmd("collect", "w-cancel", "--json"))["window_run_id"]
    )
    assert "canceled" in run_cmd("cancel", "w-cancel")
    code, frames = watch(str(run.pk), "--json")
    assert code == 2
    assert frames[-1]["status"] == "canceled"
    with pytest.raises(CommandError, match=r"\[invalid_state\] window run \d+ is already failed"):
        run_cmd("cancel", "w-err")
    with pytest.raises(EvidenceInvalidState):
        window_run_cancel(window_run_id=WindowRun.objects.get(window__tag="w-err").pk)


@pytest.mark.django_db(transaction=True)
def test_command_errors_are_clear(simulator, eager_celery) -> None:
    with pytest.raises(CommandError, match=r"end_date 2026-01-01 is before start_date") as err:
        run_cmd(
            "create", "w-bad", "--query", "q", "--country", "Hungary",
            "--start", "2026-02-01", "--end", "2026-01-01",
        )  # fmt: skip
    assert err.value.returncode == 4
    assert "on or after the start date" in str(err.value)
    with pytest.raises(CommandError, match="does not exist"):
        run_cmd("collect", "nope")
    create("w-a")
    with pytest.raises(CommandError, match="already exists"):
        create("w-a")
    with pytest.raises(CommandError, match="has not been collected yet"):
        run_cmd("status", "w-a")


@pytest.mark.django_db(transaction=True)
def test_pool_and_plan_commands(simulator, eager_celery) -> None:
    for tag, country in (("w-a", "Hungary"), ("w-b", "Poland")):
        create(tag, country)
        drive(json.loads(run_cmd("collect", tag, "--json"))["window_run_id"])
    out = run_cmd("pool", "p-ab", "--windows", "w-a,w-b", "--stage", "l3_abstracted")
    assert "created pool p-ab with 6 evidence at l3_abstracted" in out
    with pytest.raises(CommandError, match="pool tag 'p-ab' already exists"):
        run_cmd("pool", "p-ab", "--windows", "w-a")
    plan = json.loads(
        run_cmd(
            "plan",
            "bp",
            "--pool",
            "p-ab",
            "--strategy",
            "random_bundle",
            "--bundle-size",
            "4",
            "--seed",
            "7",
            "--json",
        )
    )
    assert plan["created"] is True
    assert plan["bundle_count"] == 2
    assert plan["evidence_count"] == 6
    again = run_cmd("plan", "bp", "--pool", "p-ab", "--strategy", "random_bundle",
                    "--bundle-size", "4", "--seed", "7")  # fmt: skip
    assert again.startswith("reused bundle plan bp")
    with pytest.raises(CommandError, match="different configuration"):
        run_cmd("plan", "bp", "--pool", "p-ab", "--strategy", "random_bundle", "--bundle-size", "3")
    assert Pool.objects.get(tag="p-ab").evidence_count == 6
