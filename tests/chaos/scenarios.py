"""PROOF.md section 2 faults F1-F12 as functions: ``scenario(tmp, seed, quick=...) -> result``.

Each scenario starts real worker/beat processes (``orchestration.processes``), runs one
four-stage judging run (``harness.Workload``), injects its fault at seeded moments, waits for
the run to end and returns :class:`harness.ScenarioResult` from the verifier. ``quick`` is the
fast-subset variant (fewer strikes, shorter outages). The seed decides where and when faults
land; it is printed with every result so ``JUDGE_CHAOS_SEED=<seed>`` replays the choices
(process timing still varies; the invariants must hold for every interleaving).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
from django.conf import settings
from django.db import close_old_connections, connection

from orchestration.models import LlmBatch, LlmRequest, Run, SchedulerLock
from tests.chaos.faultproxy import FaultProxy
from tests.chaos.harness import (
    Live,
    ScenarioResult,
    Workload,
    experiment_setup,
    expire_dead_leases,
    live,
    measure_recovery,
    pid_alive,
    policy_install,
    pool_children,
    run_start,
    run_status,
    strike_when,
    verdict,
    wait_terminal,
    wait_until,
)

# Widen the windows where kills should land (submit/poll/finalize/direct) without changing
# outcomes: plain latency on the simulator side.
SLOW_IO = [
    {"fault": "latency", "sleep_s": 0.05, "ops": ["chat"]},
    {"fault": "latency", "sleep_s": 0.3, "ops": ["files_create", "batches_create"]},
    {"fault": "latency", "sleep_s": 0.2, "ops": ["batches_get"]},
    {"fault": "latency", "sleep_s": 0.4, "ops": ["files_content", "results"]},
]
PIPELINE_PHASES = ("direct", "advance", "submit", "poll", "finalize")
RUN_TIMEOUT = 240.0


def _begin(
    ctx: Live, w: Workload, *, workers: int = 1, concurrency: int = 2, beat: bool = True
) -> tuple[int, float]:
    for _ in range(workers):
        ctx.start_worker(concurrency=concurrency)
    if beat:
        ctx.start_beat()
    policy_install(w)
    tag = experiment_setup(w)
    started = time.monotonic()
    run_id = run_start(tag, ctx.sim.url)
    ctx.note(f"run {run_id} started: {w.samples} samples, {w.requests} first attempts")
    return run_id, started


def _phases(ctx: Live, k: int) -> list[str]:
    chosen = ctx.rng.sample(PIPELINE_PHASES, k)
    return sorted(chosen, key=PIPELINE_PHASES.index)


# --- F1 kill -9 ------------------------------------------------------------------------------------


def f1_kill9(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """kill -9 the whole worker process group mid-phase, then start a fresh worker."""
    w = Workload()
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO) as ctx:
        run_id, started = _begin(ctx, w)
        recovery: list[float] = []
        for phase in _phases(ctx, 1 if quick else 3):
            hit = strike_when(ctx, run_id, phase)
            if hit == "after_end":
                break
            ctx.kill9(ctx.workers[0])
            expired = expire_dead_leases()
            ctx.note(f"kill -9 worker group during {hit}; expired dead leases {expired}")
            ctx.start_worker()
            recovery.append(measure_recovery(ctx, run_id))
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT)
        return verdict(ctx, "F1 kill -9 worker", run_id, started=started, recovery=recovery,
                       allow_in_flight_extras=True)  # fmt: skip


# --- F2 SIGTERM rolling restart --------------------------------------------------------------------


def f2_sigterm(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """Rolling warm restart of two workers (SIGTERM to the main process, as an operator does)."""
    w = Workload()
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO) as ctx:
        run_id, started = _begin(ctx, w, workers=2, concurrency=1)
        recovery: list[float] = []
        for _ in range(1 if quick else 3):
            time.sleep(ctx.rng.uniform(1.0, 4.0))
            if run_status(run_id) in ("completed", "failed", "canceled"):
                break
            old = ctx.workers[0]  # the oldest: a rolling restart walks through all
            t0 = time.monotonic()
            old.popen.send_signal(signal.SIGTERM)
            try:
                old.popen.wait(timeout=120)
                ctx.note(f"SIGTERM {old.name}: warm shutdown in {time.monotonic() - t0:.1f}s")
            except subprocess.TimeoutExpired:
                old.signal_group(signal.SIGKILL)
                ctx.note(f"SIGTERM {old.name}: no exit after 120s, killed")
            ctx.forget(old)
            ctx.start_worker(concurrency=1)
            recovery.append(measure_recovery(ctx, run_id))
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT)
        return verdict(ctx, "F2 SIGTERM rolling", run_id, started=started, recovery=recovery)


# --- F3 a pool child dies ----------------------------------------------------------------------------


def f3_child_dies(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """kill -9 one prefork child mid-task (OOM-like); the main worker process survives."""
    w = Workload()
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO) as ctx:
        run_id, started = _begin(ctx, w)
        recovery: list[float] = []
        for phase in _phases(ctx, 1 if quick else 3):
            hit = strike_when(ctx, run_id, phase)
            if hit == "after_end":
                break
            kids = pool_children(ctx.workers[0])
            if not kids:
                ctx.note("no pool child found")
                continue
            victim = ctx.rng.choice(kids)
            subprocess.run(["kill", "-9", str(victim)], check=False)
            wait_until(lambda v=victim: not pid_alive(v), timeout=10)
            expired = expire_dead_leases()
            ctx.note(f"kill -9 pool child {victim} during {hit}; expired {expired}")
            recovery.append(measure_recovery(ctx, run_id))
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT)
        return verdict(ctx, "F3 pool child dies", run_id, started=started, recovery=recovery,
                       allow_in_flight_extras=True)  # fmt: skip


# --- F4 Redis ------------------------------------------------------------------------------------


def _flush_redis() -> None:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    if settings.JUDGE_REDIS_URL:
        redis.Redis.from_url(settings.JUDGE_REDIS_URL).flushdb()


def _redis_port() -> int:
    """The broker's Redis port: 6379 (the machine's shared Redis) unless the matrix was
    pointed at a private instance (``tests/chaos/matrix.py`` shows how)."""
    return urlparse(settings.CELERY_BROKER_URL).port or 6379


def _redis_start(port: int) -> list[str]:
    shared = port == 6379
    return [
        "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(port),
        "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis" if shared else "/tmp",
        "--logfile", "/var/log/redis/ci.log" if shared else f"/tmp/jg-chaos-redis-{port}.log",
    ]  # fmt: skip


def redis_restart() -> float:
    """Shut Redis down without saving (every message gone) and start it again; seconds down."""
    port = str(_redis_port())
    t0 = time.monotonic()
    subprocess.run(
        ["redis-cli", "-p", port, "shutdown", "nosave"], check=False, capture_output=True
    )
    time.sleep(0.5)
    subprocess.run(_redis_start(int(port)), check=False, capture_output=True)
    ok = wait_until(
        lambda: subprocess.run(["redis-cli", "-p", port, "ping"], capture_output=True, text=True,
                               check=False).stdout.strip() == "PONG",
        timeout=30,
    )  # fmt: skip
    if not ok:  # pragma: no cover - the machine's Redis is broken
        raise RuntimeError("redis did not come back")
    return time.monotonic() - t0


def revive(ctx: Live, why: str) -> int:
    """Restart children that exited after a service fault (as a supervisor would: the
    compose file says ``restart: unless-stopped``). Returns how many exited: the scenario
    reports them as ``process_exited`` (the engine did not survive the fault on its own)."""
    exited = 0
    for child in list(ctx.procs.children):
        if child.alive():
            continue
        exited += 1
        tail = " | ".join(line for line in child.tail(8).splitlines() if line.strip())[-300:]
        ctx.note(f"{child.name} exited after {why}; restarted. log tail: {tail}")
        ctx.forget(child)
        if child.name.startswith("worker"):
            ctx.start_worker()
        else:
            ctx.start_beat()
    return exited


def f4_redis(tmp: Path, seed: int, *, quick: bool = False, restart: bool = False) -> ScenarioResult:
    """All queued messages vanish (flush of our broker DB, or a real restart without saving)."""
    w = Workload()
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO) as ctx:
        run_id, started = _begin(ctx, w)
        recovery: list[float] = []
        exited = 0
        for phase in _phases(ctx, 2 if quick else 3):
            hit = strike_when(ctx, run_id, phase, check=not restart)
            if hit == "after_end":
                break
            if restart:
                down = redis_restart()
                ctx.note(f"redis restarted (nosave) during {hit}, down {down:.1f}s")
                time.sleep(2.0)  # let the children notice the lost connection
                exited += revive(ctx, "the Redis restart")
            else:
                _flush_redis()
                ctx.note(f"broker and limiter Redis DBs flushed during {hit}")
            recovery.append(measure_recovery(ctx, run_id, check=not restart))
            exited += revive(ctx, "the Redis restart") if restart else 0
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT, check=not restart)
        exited += revive(ctx, "the Redis restart") if restart else 0
        name = "F4 Redis restart" if restart else "F4 Redis flush"
        result = verdict(ctx, name, run_id, started=started, recovery=recovery)
        if exited:
            result.ok = False
            result.violations["process_exited"] = exited
        return result


def f4_redis_restart(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    return f4_redis(tmp, seed, quick=quick, restart=True)


# --- F5 Postgres immediate restart ---------------------------------------------------------------


def _pg_restart_command() -> list[str]:
    """``pg_ctl`` on a private cluster when ``JUDGE_CHAOS_PGDATA`` names one, else the
    machine's cluster through ``pg_ctlcluster``; both with ``-m immediate`` (a crash)."""
    pgdata = os.environ.get("JUDGE_CHAOS_PGDATA")
    if pgdata:
        runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        port = str(settings.DATABASES["default"].get("PORT") or 5432)
        return [*runas, "pg_ctl", "-D", pgdata, "-o", f"-p {port} -k /tmp", "-l",
                f"{pgdata}.log", "-m", "immediate", "-w", "restart"]  # fmt: skip
    version = subprocess.run(
        ["ls", "/etc/postgresql"], capture_output=True, text=True, check=False
    ).stdout.split()[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m",
            "immediate"]  # fmt: skip


def pg_restart() -> float:
    t0 = time.monotonic()
    port = str(settings.DATABASES["default"].get("PORT") or 5432)
    subprocess.run(_pg_restart_command(), check=False, capture_output=True)
    wait_until(
        lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", port], capture_output=True,
                               check=False).returncode == 0,
        timeout=60,
    )  # fmt: skip
    close_old_connections()
    connection.close()
    return time.monotonic() - t0


def f5_postgres(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """Postgres restarted with ``-m immediate`` while results are being written."""
    w = Workload()
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO) as ctx:
        run_id, started = _begin(ctx, w)
        recovery: list[float] = []
        phases = ["direct", "finalize"] if quick else ["direct", "advance", "finalize"]
        exited = 0
        for phase in phases:
            hit = strike_when(ctx, run_id, phase, check=False)
            if hit == "after_end":
                break
            down = pg_restart()
            ctx.note(f"postgres restarted (immediate) during {hit}, down {down:.1f}s")
            time.sleep(2.0)
            exited += revive(ctx, "the Postgres restart")
            recovery.append(measure_recovery(ctx, run_id, check=False))
            exited += revive(ctx, "the Postgres restart")
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT, check=False)
        exited += revive(ctx, "the Postgres restart")
        result = verdict(ctx, "F5 Postgres restart", run_id, started=started, recovery=recovery,
                         allow_in_flight_extras=True)  # fmt: skip
        if exited:
            result.ok = False
            result.violations["process_exited"] = exited
        return result


# --- F6 network faults through the proxy ----------------------------------------------------------


def f6_network(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """latency, reset mid-body, blackhole and truncation between workers and the provider."""
    w = Workload()
    proxies: list[FaultProxy] = []

    def via_proxy(sim: Any) -> str:
        port = int(sim.url.rsplit(":", 1)[1])
        proxy = FaultProxy(upstream_port=port, seed=seed).start()
        proxies.append(proxy)
        return proxy.url

    with live(tmp, seed=seed, provider_url=via_proxy) as ctx:
        proxy = proxies[0]
        # Clients keep connections alive, so only new connections are judged: high rates.
        proxy.configure(latency=0.2, reset=0.2, truncate=0.15, blackhole=0.15, latency_s=0.3)
        run_id, started = _begin(ctx, w)
        window = 20.0 if quick else 45.0
        wait_until(
            lambda: run_status(run_id) in ("completed", "failed"), timeout=window, ctx=ctx, poll=0.5
        )
        proxy.configure()  # network healthy again: the run must finish (no hung worker)
        ctx.note(f"proxy faults for {window:.0f}s: {dict(proxy.stats)}")
        t0 = time.monotonic()
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT)
        result = verdict(ctx, "F6 network faults", run_id, started=started,
                         recovery=[round(time.monotonic() - t0, 2)])  # fmt: skip
        proxy.stop()
        return result


# --- F7 provider misbehaviour ----------------------------------------------------------------------

F7_FAULTS = [
    {"fault": "http_429", "rate": 0.15, "retry_after": 1, "ops": ["chat"]},
    {"fault": "http_500", "count": 3, "ops": ["chat"]},
    {"fault": "http_529", "count": 2, "ops": ["chat", "batches_get"]},
    {"fault": "malformed_output", "rate": 0.05},
    {"fault": "batch_fail", "count": 1},
    {"fault": "batch_expire", "partial": 0.5, "count": 1},
    {"fault": "duplicate_row", "rate": 0.05},
    {"fault": "missing_row", "rate": 0.05},
    {"fault": "malformed_line", "rate": 0.03, "variant": "mixed"},
    {"fault": "truncate_results", "count": 1, "fraction": 0.5},
]


def f7_provider(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """429 with retry-after, 5xx/529 bursts, malformed output/lines, failed and expired batches,
    duplicate/missing rows, a download cut midway."""
    w = Workload(max_attempts=6)
    with live(tmp, seed=seed, sim_faults_at_start=F7_FAULTS) as ctx:
        run_id, started = _begin(ctx, w)
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT)
        fired = ctx.sim.state.faults_fired
        ctx.note(f"faults fired: {dict(fired)}")
        return verdict(ctx, "F7 provider misbehaviour", run_id, started=started, recovery=[])


# --- F8 crash after provider create, before commit --------------------------------------------------


def f8_unknown_outcome(
    tmp: Path, seed: int, *, quick: bool = False, kill: bool | None = None
) -> ScenarioResult:
    """The provider created the batch but the worker never learned it: dropped connection
    (fast) or a stalled answer during which the worker is killed (``kill``)."""
    w = Workload()
    if kill is None:
        kill = (not quick) and seed % 2 == 1
    fault = (
        {"fault": "timeout", "when": "after", "sleep_s": 30, "count": 1, "ops": ["batches_create"]}
        if kill
        else {"fault": "drop_connection", "when": "after", "count": 1, "ops": ["batches_create"]}
    )
    with live(tmp, seed=seed, sim_faults_at_start=[fault]) as ctx:
        run_id, started = _begin(ctx, w)
        recovery: list[float] = []
        if kill:
            hit = strike_when(ctx, run_id, "submit")
            time.sleep(1.0)  # the create is logged, the answer is stalled
            ctx.kill9(ctx.workers[0])
            expired = expire_dead_leases()
            ctx.note(f"kill -9 during a stalled batches_create ({hit}); expired {expired}")
            ctx.start_worker()
            recovery.append(measure_recovery(ctx, run_id))
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT)
        result = verdict(
            ctx, "F8 unknown submit outcome", run_id, started=started, recovery=recovery
        )
        recovered = result.report.stats.get("batches_recovered", 0) if result.report else 0
        ctx.note(f"batches recovered by submission key: {recovered}")
        if recovered < 1:
            result.ok = False
            result.violations["no_batch_recovered"] = 1
        return result


# --- F9 duplicated deliveries ---------------------------------------------------------------------


def f9_duplicates(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """Every kind of task message delivered again (same ids, same lease) while the run goes."""
    from orchestration import tasks

    w = Workload()
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO) as ctx:
        run_id, started = _begin(ctx, w)
        sent: dict[str, int] = {}
        seen: set[tuple[int, str, str]] = set()

        def dup(name: str, fn: Callable[..., Any], times: int, **kw: Any) -> None:
            for _ in range(times):
                fn.delay(**kw)
            sent[name] = sent.get(name, 0) + times

        while run_status(run_id) not in ("completed", "failed", "canceled"):
            ctx.check_alive()
            for bid, status, owner in (
                LlmBatch.objects.filter(requests__process=f"run:{run_id}")
                .values_list("id", "status", "lease_owner")
                .distinct()
            ):
                key = (bid, status, owner or "")
                if key in seen:
                    continue
                seen.add(key)
                if status in ("queued", "submitting"):
                    dup("batch_submit", tasks.batch_submit, 2, batch_id=bid)
                elif status == "running" and owner:
                    dup("batch_poll", tasks.batch_poll, 2, batch_id=bid, lease_owner=owner)
                elif status == "finalizing" and owner:
                    dup("batch_finalize", tasks.batch_finalize, 2, batch_id=bid, lease_owner=owner)
            if LlmRequest.objects.filter(
                process=f"run:{run_id}", status="in_flight", route="direct"
            ).exists():
                dup(
                    "direct_calls", tasks.direct_calls, 2, provider="openai", model=w.provider_model
                )
            dup("run_advance", tasks.run_advance, 3, run_id=run_id)
            dup("tick", tasks.tick, 2)
            time.sleep(0.3)
            if time.monotonic() - started > RUN_TIMEOUT:
                ctx.note("timeout")
                break
        # Late duplicates of finished work: must all be no-ops.
        for bid, owner in seen_finalize_owners(seen):
            dup("late_finalize", tasks.batch_finalize, 2, batch_id=bid, lease_owner=owner)
        dup("late_advance", tasks.run_advance, 5, run_id=run_id)
        time.sleep(3.0)
        ctx.note(f"duplicate messages sent: {sent}")
        return verdict(ctx, "F9 duplicate delivery", run_id, started=started, recovery=[])


def seen_finalize_owners(seen: set[tuple[int, str, str]]) -> list[tuple[int, str]]:
    return sorted({(b, o) for b, s, o in seen if s == "finalizing" and o})


# --- F10 two beats, beat outage ----------------------------------------------------------------------


def _tick_runs() -> int:
    return int(
        SchedulerLock.objects.filter(name="tick").values_list("runs", flat=True).first() or 0
    )


def _control_queue_len() -> int:
    return int(redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("control"))


def _beats_alive() -> int:
    out = subprocess.run(
        ["pgrep", "-f", "celery -A judge_project beat"], capture_output=True, text=True, check=False
    ).stdout
    return len(out.split())


def f10_beats(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """Two beats at once, then no beat for a while, then one again: no double submission and
    no burst of ticks on return."""
    w = Workload()
    # The project's live-test tick (tests/live.py): 0.5 s, stored by DatabaseScheduler as 0.
    env = {"JUDGE_TICK_SECONDS": "1"}
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO, env=env) as ctx:
        run_id, started = _begin(ctx, w)
        ctx.start_beat(log_dir=tmp / "logs-beat2")
        wait_until(lambda: _tick_runs() > 0, timeout=30, ctx=ctx)
        two = _tick_runs()
        window = ctx.rng.uniform(3.0, 8.0)
        time.sleep(window)
        two = _tick_runs() - two
        for beat in list(ctx.beats):
            beat.stop()
            ctx.forget(beat)
        outage = 10.0 if quick else 30.0
        before = _tick_runs()
        queued = _control_queue_len()
        time.sleep(outage)
        during = _tick_runs() - before
        ctx.note(
            f"outage: control queue had {queued} messages when the beats stopped, "
            f"{_control_queue_len()} after; beat processes alive: {_beats_alive()}"
        )
        ctx.start_beat()
        t0 = time.monotonic()
        base = _tick_runs()
        wait_until(lambda: _tick_runs() > base, timeout=30, ctx=ctx)
        first = round(time.monotonic() - t0, 2)
        base = _tick_runs()
        time.sleep(5.0)
        after = _tick_runs() - base
        interval = float(ctx.procs.env.get("JUDGE_TICK_SECONDS", "1"))
        nominal = 5.0 / interval
        ctx.note(
            f"two beats: {two} ticks in {window:.1f}s (nominal {window / interval:.0f}); "
            f"beat outage {outage:.0f}s: {during} ticks during; first tick {first}s after the "
            f"beat restart; {after} ticks in the next 5s (nominal {nominal:.0f})"
        )
        recovery = [first]
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT)
        result = verdict(ctx, "F10 two beats + outage", run_id, started=started, recovery=recovery)
        if after > 2 * nominal + 2:
            result.ok = False
            result.violations["tick_burst"] = after
        return result


# --- F11 poison request ----------------------------------------------------------------------------


def f11_poison(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """One evidence text makes every attempt of its targets fail (parse): exhausted after
    max_attempts, the stage settles, the run completes (partial_failure_policy=continue)."""
    w = Workload(poison=True, max_attempts=3)
    with live(tmp, seed=seed) as ctx:
        run_id, started = _begin(ctx, w)
        wait_terminal(ctx, run_id, timeout=RUN_TIMEOUT)
        result = verdict(ctx, "F11 poison request", run_id, started=started, recovery=[])
        stats = result.report.stats if result.report else {}
        exhausted = int(stats.get("exhausted_keys", 0))
        poisoned = LlmRequest.objects.filter(
            process=f"run:{run_id}", stage="score_gen", attempt_index=w.max_attempts,
            status="failed", error_class="parse",
        ).count()  # fmt: skip
        ctx.note(f"exhausted keys {exhausted}; poison keys at attempt {w.max_attempts}: {poisoned}")
        if result.status != "completed" or poisoned != w.samples or exhausted != w.samples:
            result.ok = False
            result.violations["poison_not_exhausted_as_expected"] = 1
        return result


# --- F12 concurrent double start ---------------------------------------------------------------------


def f12_double_start(
    tmp: Path, seed: int, *, quick: bool = False, callers: int = 100
) -> ScenarioResult:
    """``callers`` threads call experiment_start on one experiment at the same instant."""
    from django.test import override_settings

    from orchestration.services.errors import ActiveRunExists
    from orchestration.services.runs import experiment_start
    from orchestration.simulator.config import SimulatorConfig
    from orchestration.simulator.server import run_in_thread
    from orchestration.verify import verify_run

    w = Workload()
    started = time.monotonic()
    sim = run_in_thread(SimulatorConfig(seed=seed, data_dir=tmp / "sim"))
    try:
        policy_install(w)
        tag = experiment_setup(w)
        # Postgres allows 100 connections for every session on this machine: 32 threads
        # (each its own connection) make the 100 calls, all released by one barrier.
        threads = min(callers, 32)
        barrier = threading.Barrier(threads)
        outcomes: list[str] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            if i < threads:
                barrier.wait(30)
            try:
                run = experiment_start(tag=tag)
                word = f"run:{run.pk}"
            except ActiveRunExists:
                word = "active_run_exists"
            except Exception as exc:  # anything else is a finding
                word = f"error:{type(exc).__name__}:{exc}"
            finally:
                connection.close()
            with lock:
                outcomes.append(word)

        with override_settings(JUDGE_SIMULATOR_URL=sim.url), ThreadPoolExecutor(threads) as pool:
            list(pool.map(call, range(callers)))
        runs = Run.objects.filter(experiment__tag=tag)
        counts: dict[str, int] = {}
        for word in outcomes:
            counts[word if not word.startswith("run:") else "started"] = (
                counts.get(word if not word.startswith("run:") else "started", 0) + 1
            )
        report = verify_run(run=runs.first(), submissions={}) if runs.exists() else None
        violations = {v.code: v.count for v in report.violations} if report else {}
        ok = (
            runs.count() == 1
            and counts.get("started") == 1
            and counts.get("active_run_exists") == callers - 1
        )
        if not ok:
            violations["double_start"] = runs.count()
        return ScenarioResult(
            scenario="F12 concurrent double start", seed=seed, status=str(counts), ok=ok and not violations,
            lost=0, duplicate_artifacts=0, extra_submissions=0, extra_in_flight=0,
            recovery_s=None, run_s=round(time.monotonic() - started, 1), violations=violations,
            notes=[f"{callers} callers on {threads} threads: {counts}"], report=report,
        )  # fmt: skip
    finally:
        sim.stop()
        from tests.live import flush_broker

        flush_broker()


# --- X1 operator control under load (not in PROOF.md's list; same invariants) ---------------


def x1_pause_resume_cancel(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """Pause and resume at one seeded phase, cancel at a later one, start the experiment
    again: in-flight work settles, nothing of the canceled run is left open, one active run."""
    from orchestration.services.control import run_cancel, run_pause, run_resume

    w = Workload()
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO) as ctx:
        run_id, started = _begin(ctx, w)
        first, second = _phases(ctx, 2)
        hit = strike_when(ctx, run_id, first)
        if hit != "after_end":
            run_pause(run_id=run_id)
            time.sleep(ctx.rng.uniform(1.0, 3.0))
            run_resume(run_id=run_id)
            ctx.note(f"paused and resumed during {hit}")
        hit = strike_when(ctx, run_id, second)
        if hit != "after_end":
            run_cancel(run_id=run_id)
            ctx.note(f"canceled during {hit}")
        # Batches already at the provider finish (or are canceled there) and are closed.
        wait_until(
            lambda: (
                not LlmBatch.objects.filter(
                    requests__process=f"run:{run_id}",
                    status__in=["queued", "submitting", "running", "finalizing"],
                ).exists()
            ),
            timeout=120,
            ctx=ctx,
            poll=0.3,
        )
        result = verdict(ctx, "X1 pause/resume/cancel", run_id, started=started, recovery=[])
        again = run_start("chaos", ctx.sim.url)
        wait_terminal(ctx, again, timeout=RUN_TIMEOUT)
        second_result = verdict(ctx, "X1 restart after cancel", again, started=started, recovery=[])
        ctx.note(f"second run {again}: {second_result.status}, ok={second_result.ok}")
        if not second_result.ok:
            result.ok = False
            result.violations.update({f"rerun_{k}": v for k, v in second_result.violations.items()})
        return result


# --- X2 evidence window pipeline under kill -9 (the same invariants, verify_window_run) ------


def x2_window_kill9(tmp: Path, seed: int, *, quick: bool = False) -> ScenarioResult:
    """Collect an evidence window (search, then clean, neutralize and abstract through the
    transport) and kill -9 the worker group while its LLM requests are in flight, once or
    twice; a fresh worker must finish the window with every evidence row final, one artifact
    per (row, level) and no extra provider submission. Full strength routes each level's 40
    requests through batches, quick strength its 20 through direct calls."""
    import datetime as dt

    from evidence.models import WindowRun
    from evidence.services.windows import window_collect, window_create
    from orchestration.verify import fetch_submissions, verify_window_run

    tag = f"chaos-window-{seed}"
    with live(tmp, seed=seed, sim_faults_at_start=SLOW_IO) as ctx:
        # 1 s backoff as for runs; 40 rows per level (full) go through batches, 20 (quick) direct.
        policy_install(Workload(min_batch_size=30))
        window_create(
            tag=tag, query="fascism", country="Hungary", start_date=dt.date(2026, 1, 1),
            end_date=dt.date(2026, 1, 31), evidence_limit=20 if quick else 40,
        )  # fmt: skip
        ctx.start_worker()
        ctx.start_beat()
        started = time.monotonic()
        wr = window_collect(tag=tag)
        process = f"window:{wr.pk}"

        def status() -> str:
            return str(WindowRun.objects.values_list("status", flat=True).get(pk=wr.pk))

        def settled() -> int:
            return LlmRequest.objects.filter(
                process=process, status__in=["succeeded", "failed"]
            ).count()

        done = ("completed", "failed", "canceled")
        recovery: list[float] = []
        for _ in range(1 if quick else 2):
            wait_until(
                lambda: (
                    status() in done
                    or LlmRequest.objects.filter(process=process, status="in_flight").exists()
                ),
                timeout=60,
                ctx=ctx,
                poll=0.02,
            )
            if status() in done:
                break
            time.sleep(ctx.rng.uniform(0.0, 0.3))
            ctx.kill9(ctx.workers[0])
            expired = expire_dead_leases()
            ctx.note(f"kill -9 worker group with window requests in flight; expired {expired}")
            ctx.start_worker()
            t0, base = time.monotonic(), settled()
            wait_until(lambda b=base: settled() > b or status() in done, timeout=120, ctx=ctx)
            recovery.append(round(time.monotonic() - t0, 2))
        if not wait_until(lambda: status() in done, timeout=RUN_TIMEOUT, ctx=ctx, poll=0.2):
            ctx.note(f"window run {wr.pk} not terminal after {RUN_TIMEOUT}s")
        close_old_connections()
        report = verify_window_run(window_run=wr, submissions=fetch_submissions(ctx.sim.url))
        v = {x.code: x.count for x in report.violations}
        subs = report.stats.get("submissions", {})
        extra, in_flight = int(subs.get("extra", 0)), int(subs.get("extra_in_flight_at_crash", 0))
        ok = report.ok or (set(v) == {"extra_submission"} and extra == in_flight)
        final = status()
        if final not in done:
            ok = False
            v["not_terminal"] = 1
        return ScenarioResult(
            scenario="X2 window kill -9", seed=seed, status=final, ok=ok,
            lost=v.get("lost_target", 0) + v.get("target_not_final", 0),
            duplicate_artifacts=v.get("duplicate_artifact", 0)
            + v.get("artifact_request_mismatch", 0),
            extra_submissions=extra, extra_in_flight=in_flight,
            recovery_s=max(recovery) if recovery else None,
            run_s=round(time.monotonic() - started, 1), violations=v, notes=ctx.notes,
            report=report,
            lost_in_flight_calls=int(report.stats.get("direct_calls_lost_in_flight", 0)),
        )  # fmt: skip


SCENARIOS: dict[str, Callable[..., ScenarioResult]] = {
    "F1": f1_kill9,
    "F2": f2_sigterm,
    "F3": f3_child_dies,
    "F4": f4_redis,
    "F4R": f4_redis_restart,
    "F5": f5_postgres,
    "F6": f6_network,
    "F7": f7_provider,
    "F8": f8_unknown_outcome,
    "F9": f9_duplicates,
    "F10": f10_beats,
    "F11": f11_poison,
    "F12": f12_double_start,
    "X1": x1_pause_resume_cancel,
    "X2": x2_window_kill9,
}
