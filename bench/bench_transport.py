"""W1 (materialize requests) and W4 (batch mode end to end) with floor and naive baselines.

Usage (PostgreSQL and Redis on loopback; uses the databases jg_bench / Redis db 9-10)::

    uv run python bench/bench_transport.py --w1 100000 --w4 100000 --naive 2000

Everything is measured in this one invocation on this machine, and reported as ratios:

* **W1** ``llm_requests_enqueue`` of N attempt-1 rows (COPY -> INSERT ... ON CONFLICT) vs the
  *floor*: a bare COPY of the same rows into an unindexed copy of the table.
* **W4** N requests through shard -> upload -> poll -> download -> parse -> apply against the
  instant simulator with one real worker (2 processes) and beat, vs the *floor* (COPY the
  requests, COPY + ``UPDATE ... FROM`` the results, JSONL encode + parse of the payloads) and
  vs *naive* (one Celery task per request: direct call + ORM save; run on a smaller N, rate
  compared). Also provider calls per batch and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "jg_bench"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/10")
os.environ.setdefault("JUDGE_REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("JUDGE_LOG_LEVEL", "WARNING")
os.environ.setdefault("JUDGE_LOG_FORMAT", "text")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "judge_project.settings")


def _recreate_db() -> None:
    from bench._db import recreate_database

    recreate_database(DB_NAME)


_recreate_db()
import django

django.setup()

import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction

from orchestration.models import LlmBatch, LlmRequest
from orchestration.processes import Processes, free_port
from orchestration.transport.services.enqueue import (
    _COLUMNS,
    RequestSpec,
    _row,
    llm_requests_enqueue,
)
from tests.transport.helpers import sim_get


def specs(n: int, start: int = 0) -> list[RequestSpec]:
    return [
        RequestSpec(
            custom_key=f"bench:{i}",
            process="bench:1",
            stage="bench",
            provider="openai",
            model="gpt-4.1-mini",
            provider_model="gpt-4.1-mini-2025-04-14",
            system_prompt="You are a careful evaluator. Answer briefly.",
            user_prompt=f"Evaluate item {i}: the committee met and adopted the agenda.",
            max_output_tokens=64,
            params={"backoff_s": 1.0, "jitter": 0.0},
        )
        for i in range(start, start + n)
    ]


def truncate() -> None:
    with connection.cursor() as c:
        c.execute(
            "TRUNCATE orchestration_llmrequest, orchestration_llmbatch, orchestration_runevent, "
            "orchestration_schedulerlock CASCADE"
        )


def w1(n: int) -> dict[str, float]:
    truncate()
    chunk = 20_000
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        llm_requests_enqueue(specs=specs(min(chunk, n - start), start))
    engine_s = time.perf_counter() - t0
    assert LlmRequest.objects.count() == n
    # Floor: the same rows, COPY into an unindexed, constraint-free copy of the table.
    from django.utils import timezone

    with connection.cursor() as c:
        c.execute("DROP TABLE IF EXISTS bench_floor")
        c.execute(
            "CREATE TABLE bench_floor (LIKE orchestration_llmrequest INCLUDING DEFAULTS "
            "EXCLUDING IDENTITY)"
        )
        c.execute("ALTER TABLE bench_floor ALTER COLUMN id DROP NOT NULL")
    now = timezone.now()
    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as c:
        for start in range(0, n, chunk):
            rows = [_row(s, 1, now) for s in specs(min(chunk, n - start), start)]
            with c.cursor.copy(f"COPY bench_floor ({', '.join(_COLUMNS)}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row([json.dumps(v) if isinstance(v, dict) else v for v in row])
    floor_s = time.perf_counter() - t0
    return {
        "n": n,
        "engine_s": engine_s,
        "floor_s": floor_s,
        "rows_per_s": n / engine_s,
        "ratio_to_floor": engine_s / floor_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def w4_floor(n: int) -> float:
    """COPY requests, COPY + UPDATE ... FROM results, JSONL encode/parse of the payloads."""
    with connection.cursor() as c:
        c.execute("DROP TABLE IF EXISTS bench_floor4")
        c.execute("DROP TABLE IF EXISTS bench_res")
        c.execute("CREATE TABLE bench_floor4 (id bigint primary key, prompt text, output text)")
        c.execute("CREATE TEMP TABLE bench_res (id bigint, output text)")
    t0 = time.perf_counter()
    lines = [
        json.dumps({"custom_id": f"r{i}", "body": {"messages": [{"content": f"item {i}"}]}})
        for i in range(n)
    ]
    results = [
        json.dumps({"custom_id": f"r{i}", "response": {"body": {"choices": [{"message": {
            "content": f"VERDICT: A {i}"}}]}}})
        for i in range(n)
    ]  # fmt: skip
    parsed = [json.loads(line) for line in results]
    _ = [json.loads(line) for line in lines]
    with transaction.atomic(), connection.cursor() as c:
        with c.cursor.copy("COPY bench_floor4 (id, prompt) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i, f"item {i}"))
    with transaction.atomic(), connection.cursor() as c:
        with c.cursor.copy("COPY bench_res (id, output) FROM STDIN") as cp:
            for i, p in enumerate(parsed):
                cp.write_row((i, p["response"]["body"]["choices"][0]["message"]["content"]))
        c.execute("UPDATE bench_floor4 f SET output = r.output FROM bench_res r WHERE f.id = r.id")
    return time.perf_counter() - t0


def wait_warm(procs: Processes, timeout: float = 120.0) -> None:
    """Wait until beat and the worker have completed a tick (imports done, connections open)."""
    from orchestration.models import SchedulerLock

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if SchedulerLock.objects.filter(name="tick", runs__gte=2).exists():
            return
        for c in procs.children:
            if not c.alive():
                raise RuntimeError(f"{c.name} died:\n{c.tail()}")
        time.sleep(0.2)
    raise RuntimeError("worker did not warm up")


def _group_proc_dirs(procs: Processes, name: str) -> Iterator[Path]:
    """``/proc/<pid>`` of every live process in a child's process group."""
    child = next(c for c in procs.children if c.name == name)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if os.getpgid(int(pid_dir.name)) == child.popen.pid:
                yield pid_dir
        except (OSError, ProcessLookupError):
            continue


def rss_mb_of_group(procs: Processes, name: str) -> float:
    """Peak RSS (VmHWM) of the largest process in a child's process group."""
    peak = 0.0
    for pid_dir in _group_proc_dirs(procs, name):
        with contextlib.suppress(OSError, IndexError, ValueError):
            for line in (pid_dir / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, float(line.split()[1]) / 1024)
    return peak


def _proc_cpu_s(pid_dir: Path, *, with_children: bool = False) -> float:
    fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (reaped children)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_s_of_group(procs: Processes, name: str) -> float:
    """CPU seconds (user + system) used so far by a child's process group."""
    total = 0.0
    for pid_dir in _group_proc_dirs(procs, name):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += _proc_cpu_s(pid_dir)
    return total


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL process on this machine (plus reaped backends)."""
    total = 0.0
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if (pid_dir / "comm").read_text().strip() == "postgres":
                total += _proc_cpu_s(pid_dir, with_children=True)
        except (OSError, IndexError, ValueError):
            continue
    return total


#: Worker layout for W4/W2 (set from the command line): processes per worker, and whether
#: provider I/O gets its own worker as in docker-compose.yml.
WORKERS: dict[str, Any] = {"concurrency": 2, "split": False}


def run_engine(n: int, *, naive: bool, tmp: Path) -> dict[str, Any]:
    truncate()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    redis.Redis.from_url(str(settings.JUDGE_REDIS_URL)).flushdb()
    port = free_port()
    env = {**os.environ, "JUDGE_SIMULATOR_URL": f"http://127.0.0.1:{port}",
           "JUDGE_TICK_SECONDS": "1"}  # fmt: skip
    procs = Processes(env=env, log_dir=tmp / ("naive" if naive else "w4"))
    try:
        import tempfile

        sim_dir = Path(tempfile.mkdtemp(prefix="sim-", dir=tmp))  # fresh: file ids are seeded
        _, url = procs.simulator(port=port, data_dir=sim_dir)
        settings.JUDGE_SIMULATOR_URL = url
        if naive:
            procs.spawn(
                "worker",
                [sys.executable, "-m", "celery", "-A", "judge_project", "worker", "-Q",
                 "control,provider_io,apply", "-c", "8", "-l", "WARNING", "--include",
                 "bench.naive", "--without-gossip", "--without-mingle"],
            )  # fmt: skip
        elif WORKERS["split"]:
            # The compose topology: provider I/O on its own worker, apply/control on another.
            procs.worker(concurrency=WORKERS["concurrency"], queues="control,apply")
            procs.worker(name="worker-io", concurrency=WORKERS["concurrency"], queues="provider_io")
        else:
            procs.worker(concurrency=WORKERS["concurrency"])
        procs.beat()
        wait_warm(procs)  # time the work, not process start-up (W8 measures that)
        with transaction.atomic():  # all rows appear at once, as a materialized stage does
            for start in range(0, n, 20_000):
                llm_requests_enqueue(specs=specs(min(20_000, n - start), start))
            if naive:  # never visible as pending: the tick must not route them
                LlmRequest.objects.update(status="in_flight", route="direct")
        names = [c.name for c in procs.children if c.name != "beat"]
        cpu0 = {name: cpu_s_of_group(procs, name) for name in names}
        pg0 = postgres_cpu_s()
        t0 = time.perf_counter()
        if naive:
            from bench.naive import naive_call

            ids = list(LlmRequest.objects.values_list("id", flat=True))
            for rid in ids:
                naive_call.delay(rid)
        # Watch through the (process, stage, status) index: a count over the whole table
        # five times a second would itself cost the database more than the engine's work.
        unsettled = LlmRequest.objects.filter(
            process="bench:1", stage="bench", status__in=["pending", "in_flight"]
        )
        while True:
            if not unsettled.exists():
                break
            for c in procs.children:
                if not c.alive():
                    raise RuntimeError(f"{c.name} died:\n{c.tail()}")
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
        assert LlmRequest.objects.filter(status="succeeded").count() == n, "requests failed"
        cpu = {name: round(cpu_s_of_group(procs, name) - cpu0[name], 2) for name in names}
        cpu["postgres"] = round(postgres_cpu_s() - pg0, 2)
        stats = sim_get(f"{url}/_sim/stats")
        batches = LlmBatch.objects.count()
        rss = rss_mb_of_group(procs, "worker")
        if WORKERS["split"] and not naive:
            rss = max(rss, rss_mb_of_group(procs, "worker-io"))
        out = {"n": n, "seconds": seconds, "req_per_s": n / seconds, "batches": batches,
               "worker_peak_rss_mb": rss, "cpu_s": cpu, "sim_stats": stats}  # fmt: skip
        return out
    finally:
        procs.stop_all()


def w2(n: int, concurrency: int, tmp: Path) -> dict[str, Any]:
    """Direct mode, simulator latency 100 ms: engine runner vs an asyncio script baseline."""
    import asyncio
    import tempfile

    import aiohttp

    from policies.models import Policy

    truncate()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    Policy.objects.filter(scope="global").update(
        batch_mode="disabled", direct_concurrency=concurrency
    )
    port = free_port()
    env = {**os.environ, "JUDGE_SIMULATOR_URL": f"http://127.0.0.1:{port}",
           "JUDGE_TICK_SECONDS": "1"}  # fmt: skip
    procs = Processes(env=env, log_dir=tmp / f"w2-{concurrency}")
    faults = json.dumps({"faults": [{"fault": "latency", "sleep_s": 0.1}]})
    try:
        sim_dir = Path(tempfile.mkdtemp(prefix="sim-", dir=tmp))
        _, url = procs.simulator(port=port, data_dir=sim_dir, faults=faults)
        procs.worker(concurrency=2)
        procs.beat()
        wait_warm(procs)
        with transaction.atomic():
            for start in range(0, n, 20_000):
                llm_requests_enqueue(specs=specs(min(20_000, n - start), start))
        t0 = time.perf_counter()
        while LlmRequest.objects.exclude(status="succeeded").exists():
            time.sleep(0.2)
        engine_s = time.perf_counter() - t0

        async def script() -> None:
            sem = asyncio.Semaphore(concurrency)
            body = {"model": "gpt-4.1-mini-2025-04-14", "max_completion_tokens": 64}
            outputs: list[str] = []

            async def one(session: aiohttp.ClientSession, i: int) -> None:
                async with sem:
                    msg = [{"role": "user", "content": f"Evaluate item {i}."}]
                    async with session.post(
                        f"{url}/openai/v1/chat/completions", json={**body, "messages": msg}
                    ) as resp:
                        data = await resp.json()
                        if "choices" not in data:
                            raise RuntimeError(f"simulator answered {resp.status}: {data}")
                        outputs.append(data["choices"][0]["message"]["content"])

            time.perf_counter()
            headers = {"Authorization": "Bearer sk-simulator"}
            async with aiohttp.ClientSession(headers=headers) as session:
                await asyncio.gather(*(one(session, i) for i in range(n)))
            script_outputs.extend(outputs)

        script_outputs: list[str] = []
        t_script = time.perf_counter()
        asyncio.run(script())
        # The script's one final write (a COPY), outside the event loop.
        with connection.cursor() as c:
            c.execute("DROP TABLE IF EXISTS bench_w2")
            c.execute("CREATE TABLE bench_w2 (id bigint, output text)")
            with c.cursor.copy("COPY bench_w2 (id, output) FROM STDIN") as cp:
                for i, o in enumerate(script_outputs):
                    cp.write_row((i, o))
        script_s = time.perf_counter() - t_script
    finally:
        procs.stop_all()
        Policy.objects.filter(scope="global").update(batch_mode="auto", direct_concurrency=8)
    return {"n": n, "concurrency": concurrency, "engine_s": engine_s, "script_s": script_s,
            "engine_req_per_s": n / engine_s, "script_req_per_s": n / script_s,
            "ideal_req_per_s": concurrency / 0.1}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--w1", type=int, default=100_000)
    parser.add_argument("--w4", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=2_000)
    parser.add_argument("--tmp", default=str(ROOT / "var" / "bench"))
    parser.add_argument(
        "--max-batch-size", type=int, default=None, help="set the global policy's shard size"
    )
    parser.add_argument("--max-concurrent-batches", type=int, default=None)
    parser.add_argument("--worker-concurrency", type=int, default=2, help="processes per worker")
    parser.add_argument(
        "--split-workers",
        action="store_true",
        help="run provider_io on a second worker (the docker-compose topology)",
    )
    parser.add_argument("--w2", type=int, default=0, help="direct-mode requests (W2)")
    parser.add_argument("--w2-concurrency", default="8,32", help="comma-separated")
    args = parser.parse_args()
    tmp = Path(args.tmp)
    WORKERS.update(concurrency=args.worker_concurrency, split=args.split_workers)
    tmp.mkdir(parents=True, exist_ok=True)
    call_command("migrate", verbosity=0)
    from policies.models import Policy

    changes = {
        k: v
        for k, v in {
            "max_batch_size": args.max_batch_size,
            "max_concurrent_batches": args.max_concurrent_batches,
        }.items()
        if v is not None
    }
    if changes:
        Policy.objects.filter(scope="global").update(**changes)
    glob = Policy.objects.get(scope="global")
    print(f"policy: max_batch_size={glob.max_batch_size} "
          f"max_concurrent_batches={glob.max_concurrent_batches}; workers: "
          f"{'2 (control+apply, provider_io)' if args.split_workers else 1} x "
          f"{args.worker_concurrency} processes")  # fmt: skip
    report: dict[str, object] = {}
    if args.w1:
        r = w1(args.w1)
        report["W1"] = r
        print(f"W1 materialize {r['n']:,} requests: {r['engine_s']:.2f} s "
              f"({r['rows_per_s']:,.0f} rows/s), floor {r['floor_s']:.2f} s, "
              f"ratio to floor {r['ratio_to_floor']:.2f}x, peak RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip
    if args.w4:
        e = run_engine(args.w4, naive=False, tmp=tmp)
        # The best of three: the floor is in-process work whose time varies by a third from
        # one measurement to the next on a shared machine; the fastest is the strictest baseline.
        floors = [w4_floor(args.w4) for _ in range(3)]
        floor = min(floors)
        calls: dict[str, object] = e["sim_stats"]  # type: ignore[assignment]
        report["W4"] = {**e, "floor_s": floor, "floor_runs_s": floors}
        print(f"W4 batch end to end {e['n']:,} requests: {e['seconds']:.1f} s "
              f"({e['req_per_s']:,.0f} req/s) in {e['batches']} batches; floor {floor:.2f} s (best of "
              f"{', '.join(f'{f:.2f}' for f in floors)}) "
              f"-> ratio to floor {e['seconds'] / floor:.1f}x; worker peak RSS "
              f"{e['worker_peak_rss_mb']:.0f} MB")  # fmt: skip
        print(f"   simulator calls: {json.dumps(calls.get('calls', calls))[:400]}")
        cpu_total = sum(e["cpu_s"].values())
        print(f"   CPU seconds during the run: {json.dumps(e['cpu_s'])} = {cpu_total:.1f} s "
              f"({1000 * cpu_total / e['n']:.2f} CPU-ms per request)")  # fmt: skip
        if args.naive:
            nv = run_engine(args.naive, naive=True, tmp=tmp)
            report["naive"] = nv
            print(f"naive (1 task/request, N={nv['n']:,}): {nv['req_per_s']:,.0f} req/s -> "
                  f"engine is {e['req_per_s'] / nv['req_per_s']:.1f}x faster per request")  # fmt: skip
    if args.w2:
        for conc in [int(c) for c in args.w2_concurrency.split(",")]:
            r2 = w2(args.w2, conc, tmp)
            report[f"W2_c{conc}"] = r2
            print(f"W2 direct {r2['n']:,} requests, 100 ms latency, concurrency {conc}: engine "
                  f"{r2['engine_req_per_s']:.0f} req/s, asyncio script {r2['script_req_per_s']:.0f}"
                  f" req/s (engine/script {r2['engine_req_per_s'] / r2['script_req_per_s']:.2f}x;"
                  f" ideal {r2['ideal_req_per_s']:.0f} req/s)")  # fmt: skip
    out = tmp / "bench_transport.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
