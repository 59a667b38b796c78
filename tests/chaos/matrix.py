"""The full chaos matrix: every PROOF.md fault N times, then one summary table.

    JUDGE_CHAOS=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/jg_chaos \\
      CELERY_BROKER_URL=redis://127.0.0.1:6379/12 JUDGE_REDIS_URL=redis://127.0.0.1:6379/11 \\
      uv run python -m tests.chaos.matrix --runs 10 [--only F1,F5] [--seed 7] [--quick]

Runs outside pytest (a long matrix is a job, not a test): it creates its own database
``<name>_chaos_matrix`` (migrated once, flushed before every scenario run), runs each
scenario of :mod:`tests.chaos.scenarios` with seeds ``seed, seed+1, ...``, prints one line
per run and the table (scenario, runs, failed runs, lost, duplicate artifacts, extra
submissions, recovery time), and appends every result to ``var/chaos/matrix.jsonl``.
Scenarios that restart the shared Redis or Postgres (F4R, F5) run only with ``JUDGE_CHAOS=1``.
Exit status 1 when any run broke an invariant.

Those restarts hit whatever the URLs point at. To keep the machine's shared services (and
anything else using them) out of it, give the matrix private ones::

    runuser -u postgres -- initdb -D /tmp/jg-chaos-pg
    runuser -u postgres -- pg_ctl -D /tmp/jg-chaos-pg -o "-p 5433 -k /tmp" -l /tmp/jg-chaos-pg.log start
    redis-server --port 6380 --daemonize yes --save "" --appendonly no --dir /tmp
    JUDGE_CHAOS=1 JUDGE_CHAOS_PGDATA=/tmp/jg-chaos-pg \\
      DATABASE_URL=postgres://postgres@127.0.0.1:5433/jg_chaos \\
      CELERY_BROKER_URL=redis://127.0.0.1:6380/0 JUDGE_REDIS_URL=redis://127.0.0.1:6380/1 \\
      uv run python -m tests.chaos.matrix --runs 10

F5 then restarts the private cluster with ``pg_ctl -m immediate``, F4R the Redis on the
broker URL's port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

RESTARTS_SHARED = {"F4R", "F5"}


def _setup_django(db_suffix: str) -> Any:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "judge_project.settings_test")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    name = settings.DATABASES["default"]["NAME"]
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = f"{name}_{db_suffix}"
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{name}_{db_suffix}"
    old = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    return old


def _fmt_s(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f}"


def table(results: list[dict[str, Any]]) -> str:
    """Markdown summary, one row per scenario."""
    rows = [
        "| scenario | runs | failed runs | lost | duplicate artifacts | extra submissions "
        "| direct calls repeated after a kill | recovery s (median / max) | run s (median) "
        "| violations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["scenario"], []).append(r)
    for name, items in by.items():
        rec = [r["recovery_s"] for r in items if r["recovery_s"] is not None]
        codes: dict[str, int] = {}
        for r in items:
            for code, n in r["violations"].items():
                codes[code] = codes.get(code, 0) + n
        rows.append(
            f"| {name} | {len(items)} | {sum(not r['ok'] for r in items)} | "
            f"{sum(r['lost'] for r in items)} | {sum(r['duplicate_artifacts'] for r in items)} | "
            f"{sum(r['extra_submissions'] for r in items)} | "
            f"{sum(r.get('lost_in_flight_calls', 0) for r in items)} | {_fmt_s(rec)} | "
            f"{statistics.median(r['run_s'] for r in items):.1f} | "
            f"{', '.join(f'{k}={v}' for k, v in sorted(codes.items())) or '-'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per scenario")
    parser.add_argument("--only", default="", help="comma-separated scenario ids (F1,F4R,...)")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument("--quick", action="store_true", help="the fast-subset strength")
    parser.add_argument("--out", default="var/chaos/matrix.jsonl")
    args = parser.parse_args(argv)

    old_name = _setup_django("chaos_matrix")
    from django.core.management import call_command
    from django.db import connection

    from tests.chaos.harness import chaos_seed
    from tests.chaos.scenarios import SCENARIOS

    chosen = [s for s in (args.only.split(",") if args.only else SCENARIOS) if s]
    if os.environ.get("JUDGE_CHAOS") != "1":
        skipped = [s for s in chosen if s in RESTARTS_SHARED]
        chosen = [s for s in chosen if s not in RESTARTS_SHARED]
        if skipped:
            print(f"skipping {skipped}: they restart shared Redis/Postgres; set JUDGE_CHAOS=1")
    base = args.seed if args.seed is not None else chaos_seed()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    print(f"chaos matrix: {chosen} x {args.runs}, seeds from {base}", flush=True)
    try:
        for name in chosen:
            for i in range(args.runs):
                seed = base + i
                connection.close()
                call_command("flush", interactive=False, verbosity=0)
                t0 = time.monotonic()
                keep = bool(os.environ.get("JUDGE_CHAOS_KEEP"))  # keep process logs
                with (
                    contextlib.nullcontext(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
                    if keep
                    else tempfile.TemporaryDirectory(prefix=f"chaos-{name}-")
                ) as tmp:
                    try:
                        res = SCENARIOS[name](Path(tmp), seed, quick=args.quick)
                        row = {k: v for k, v in res.__dict__.items() if k != "report"}
                        row["scenario"] = name + " " + res.scenario.split(" ", 1)[1]
                    except Exception as exc:
                        traceback.print_exc()
                        row = {
                            "scenario": name, "seed": seed, "status": "harness_error", "ok": False,
                            "lost": 0, "duplicate_artifacts": 0, "extra_submissions": 0,
                            "extra_in_flight": 0, "recovery_s": None,
                            "run_s": round(time.monotonic() - t0, 1),
                            "violations": {"harness_error": 1}, "notes": [f"{type(exc).__name__}: {exc}"],
                        }  # fmt: skip
                results.append(row)
                with out.open("a") as fh:
                    fh.write(json.dumps(row, default=str) + "\n")
                print(
                    f"[{name} {i + 1}/{args.runs}] seed={seed} ok={row['ok']} status={row['status']} "
                    f"lost={row['lost']} dup={row['duplicate_artifacts']} "
                    f"extra={row['extra_submissions']} recovery={row['recovery_s']} "
                    f"run_s={row['run_s']} violations={row['violations']}",
                    flush=True,
                )
                if not row["ok"]:
                    for note in row["notes"]:
                        print("    ", note, flush=True)
    finally:
        print()
        print(table(results))
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
