"""Shared machinery of the chaos suite: workload, live processes, fault helpers, the verdict.

Used by the pytest scenarios (``tests/chaos/test_*.py``) and by the full matrix script
(``python -m tests.chaos.matrix``), so both run the very same scenario code.

Workload: one judging experiment through all four stages on real worker and beat processes,
against a provider simulator in this process (``run_in_thread``). A global policy row makes it
fast and mixed: ``min_batch_size`` above the sample count sends the rubric stages through
direct calls and the score stages (samples x evidence) through provider batches; polls every
second, retries after ~1 s, ``partial_failure_policy=continue`` so an exhausted target lets the
run finish. Every scenario ends with :func:`orchestration.verify.verify_run` and the
simulator's submission counts.

Lease fast-forward: killed processes leave leases behind (direct calls: timeout + 60 s, a
submit: 600 s). Waiting them out would make a scenario last ten minutes without testing
anything more, so after a kill :func:`expire_dead_leases` moves the expiry of every lease whose
*owner process is dead* (owner ids carry the pid) into the past: exactly what the clock would
do, restricted to holders that can no longer act. Leases of live processes are never touched.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import close_old_connections, connection
from django.db.models import Q
from django.test import override_settings
from django.utils import timezone

from orchestration.models import LlmBatch, LlmRequest, Run, RunEvent, SchedulerLock
from orchestration.processes import Child, Processes
from orchestration.simulator.config import SimulatorConfig
from orchestration.simulator.server import SimulatorHandle, run_in_thread
from orchestration.transport.providers import reset_clients
from orchestration.verify import VerifyReport, fetch_submissions, verify_run
from tests.live import flush_broker, live_env

POISON = "POISON-PILL"
TERMINAL = ("completed", "failed", "canceled")


def chaos_seed(default: int | None = None) -> int:
    """``JUDGE_CHAOS_SEED`` replays a failure; otherwise a fresh seed (printed by callers)."""
    raw = os.environ.get("JUDGE_CHAOS_SEED")
    if raw:
        return int(raw)
    return default if default is not None else random.SystemRandom().randrange(1, 2**31)


# --- simulator with a poison-aware responder -------------------------------------------------


def poison_responder(*, model: str, system: str | None, user: str, seed: str) -> str:
    """The default simulated model, except prompts carrying :data:`POISON` get garbage back.

    Why: F11 needs a request that fails on *every* attempt whatever its custom id; the marker
    sits in one evidence text, so each sample's target holding it is a poison request.
    """
    from orchestration.judging.sim_responder import respond

    if POISON in user or POISON in (system or ""):  # evidence sits in the system prompt
        return "I refuse to answer in the required format."
    return respond(model=model, system=system, user=user, seed=seed)


def start_simulator(
    tmp: Path, *, seed: int, faults: list[dict[str, Any]] | None = None
) -> SimulatorHandle:
    from orchestration.simulator.faults import parse_faults

    cfg = SimulatorConfig(seed=seed, data_dir=tmp / "sim", responder=poison_responder)
    cfg.faults = parse_faults(faults or [])
    return run_in_thread(cfg)


def sim_faults(sim_url: str, faults: list[dict[str, Any]], *, append: bool = False) -> None:
    from tests.transport.helpers import sim_post

    body: dict[str, Any] = {"faults": faults}
    if append:
        body["mode"] = "append"
    sim_post(f"{sim_url}/_sim/faults", body)


# --- workload ---------------------------------------------------------------------------------

BODY: dict[str, Any] = {
    "rubric": {"model": "gpt-4.1-mini", "scale_size": 4, "concept": "fascism"},
    "scoring": {
        "model": "gpt-4.1-mini",
        "method": "subset",
        "abstain_enabled": True,
        "evidence_view": "l0_raw",
        "randomizations": ["anonymize_stages"],
        "evidence_bundle_size": 1,
        "bundle_strategy": "window_round_robin",
        "clustering_seed": 7,
    },
    "sample_count": 30,
    "evidence": {"pool_tag": "chaos-pool"},
}


@dataclass(frozen=True)
class Workload:
    samples: int = 30
    evidence_per_window: int = 3  # x 2 windows = targets per sample
    min_batch_size: int = 50  # > samples: rubric stages go direct, score stages batch
    max_attempts: int = 4
    poison: bool = False
    provider_model: str = "gpt-4.1-mini"

    @property
    def targets(self) -> int:
        return self.samples * self.evidence_per_window * 2

    @property
    def requests(self) -> int:
        return 2 * self.samples + 2 * self.targets


def policy_install(w: Workload, **overrides: Any) -> None:
    """The global policy row that makes chaos runs fast (see module docstring)."""
    from policies.models import Policy

    fields: dict[str, Any] = {
        "poll_interval_seconds": 1,
        "retry_backoff_seconds": 1,
        "retry_jitter_ratio": 0.2,
        "min_batch_size": w.min_batch_size,
        "max_batch_size": 500,
        "max_request_attempts": w.max_attempts,
        "request_timeout_seconds": 8,
        "direct_concurrency": 8,
        "partial_failure_policy": "continue",
        **overrides,
    }
    Policy.objects.update_or_create(scope="global", key="default", defaults=fields)


def experiment_setup(w: Workload, *, tag: str = "chaos") -> str:
    """Template, pool (with the poison marker in one evidence text when asked), experiment."""
    from configs_app.services import template_create
    from evidence.models import Evidence, PoolEvidence
    from evidence.services.pools import demo_pool_load
    from orchestration.services.runs import experiment_create

    body = {
        **BODY,
        "sample_count": w.samples,
        "rubric": {**BODY["rubric"], "model": w.provider_model},
        "scoring": {**BODY["scoring"], "model": w.provider_model},
        "evidence": {"pool_tag": f"{tag}-pool"},
    }
    template = template_create(template_id=f"t-{tag}", body=body)
    demo_pool_load(tag=f"{tag}-pool", windows=2, per_window=w.evidence_per_window)
    if w.poison:
        member = PoolEvidence.objects.filter(pool__tag=f"{tag}-pool").order_by("position").first()
        if member is None:  # pragma: no cover - demo pools are never empty
            raise RuntimeError("empty pool")
        first = Evidence.objects.get(pk=member.evidence_id)
        Evidence.objects.filter(pk=first.pk).update(l0_raw=f"{first.l0_raw}\n{POISON}")
    experiment_create(template_ref=f"{template.template_id}@{template.version}", tag=tag)
    return tag


def run_start(tag: str, sim_url: str) -> int:
    from orchestration.services.runs import experiment_start

    with override_settings(JUDGE_SIMULATOR_URL=sim_url):
        return int(experiment_start(tag=tag).pk)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Live:
    """The live processes of one scenario and what happened to them."""

    procs: Processes
    sim: SimulatorHandle
    seed: int
    rng: random.Random
    provider_url: str  # what workers use (the simulator, or a fault proxy in front of it)
    notes: list[str] = field(default_factory=list)
    workers: list[Child] = field(default_factory=list)
    beats: list[Child] = field(default_factory=list)
    worker_seq: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.notes.append(f"{time.strftime('%H:%M:%S')} {text}")

    def start_worker(self, concurrency: int = 2) -> Child:
        self.worker_seq += 1
        child = self.procs.worker(name=f"worker{self.worker_seq}", concurrency=concurrency)
        self.workers.append(child)
        return child

    def start_beat(self, log_dir: Path | None = None) -> Child:
        if log_dir is None:
            child = self.procs.beat()
        else:
            other = Processes(env=self.procs.env, log_dir=log_dir)
            child = other.beat()
            self.procs.children.append(child)
        self.beats.append(child)
        return child

    def forget(self, child: Child) -> None:
        """A child this scenario killed on purpose: no longer checked for liveness."""
        with contextlib.suppress(ValueError):
            self.procs.children.remove(child)
        for group in (self.workers, self.beats):
            with contextlib.suppress(ValueError):
                group.remove(child)

    def kill9(self, child: Child) -> None:
        """SIGKILL the whole process group and wait until every member is really gone (so
        :func:`expire_dead_leases` sees them dead)."""
        pids = [child.popen.pid, *pool_children(child)]
        child.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.forget(child)

    def check_alive(self) -> None:
        for child in self.procs.children:
            if not child.alive():
                raise AssertionError(f"{child.name} died unexpectedly:\n{child.tail(30)}")


@contextlib.contextmanager
def live(
    tmp: Path,
    *,
    seed: int,
    sim_faults_at_start: list[dict[str, Any]] | None = None,
    provider_url: Callable[[SimulatorHandle], str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Live]:
    """Simulator in this process; workers/beat are started by the scenario via ``Live``."""
    sim = start_simulator(tmp, seed=seed, faults=sim_faults_at_start)
    reset_clients()
    url = provider_url(sim) if provider_url else sim.url
    flush_broker()
    # Tick every second, not tests/live.py's 0.5 s: django-celery-beat stores whole seconds,
    # and 0.5 becomes a zero interval (a tick storm, docs/PROOF_RESULTS.md finding 1) that
    # would drown every other fault; F10 keeps 0.5 s on purpose to show it.
    extra = {"JUDGE_PROVIDER_TIMEOUT_S": "6", "JUDGE_TICK_SECONDS": "1", **(env or {})}
    procs = Processes(env=live_env(url, **extra), log_dir=tmp / "logs")
    ctx = Live(procs=procs, sim=sim, seed=seed, rng=random.Random(seed), provider_url=url)
    try:
        with override_settings(JUDGE_SIMULATOR_URL=sim.url):
            yield ctx
    finally:
        procs.stop_all()
        flush_broker()
        sim.stop()
        reset_clients()


# --- observing and steering -------------------------------------------------------------------


def settled_requests(run_id: int) -> int:
    return LlmRequest.objects.filter(
        process=f"run:{run_id}", status__in=["succeeded", "failed"]
    ).count()


def run_status(run_id: int) -> str:
    return str(Run.objects.values_list("status", flat=True).get(pk=run_id))


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, ctx: Live | None = None, poll: float = 0.05
) -> bool:
    """Poll ``predicate``; False on timeout. Fails fast when a live child died unexpectedly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # a query during a Postgres restart
            close_old_connections()
            connection.close()
        if ctx is not None:
            ctx.check_alive()
        time.sleep(poll)
    return False


def wait_terminal(ctx: Live, run_id: int, *, timeout: float, check: bool = True) -> str:
    """Wait for the run to end; ``check=False`` tolerates children exiting (service faults,
    where the scenario revives and reports them itself)."""
    ok = wait_until(
        lambda: run_status(run_id) in TERMINAL,
        timeout=timeout,
        ctx=ctx if check else None,
        poll=0.2,
    )
    status = run_status(run_id)
    if not ok:
        ctx.note(f"run {run_id} not terminal after {timeout}s (status {status})")
    return status


def measure_recovery(
    ctx: Live, run_id: int, *, timeout: float = 120.0, check: bool = True
) -> float:
    """Seconds until the run makes progress again (a request settles, or it ends)."""
    start = time.monotonic()
    base = settled_requests(run_id)
    wait_until(
        lambda: settled_requests(run_id) > base or run_status(run_id) in TERMINAL,
        timeout=timeout,
        ctx=ctx if check else None,
        poll=0.1,
    )
    return round(time.monotonic() - start, 2)


def _owner_pid(owner: str) -> int | None:
    parts = owner.split(":")
    if len(parts) >= 4 and parts[-2].isdigit():
        return int(parts[-2])
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): treat it as dead.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"
    return True


def expire_dead_leases() -> dict[str, int]:
    """Expire leases whose owner process is dead (see module docstring). Returns counts."""
    now = timezone.now()
    past = now - timedelta(seconds=1)
    owners: set[str] = set()
    owners |= set(
        LlmBatch.objects.filter(lease_expires_at__gt=now)
        .exclude(lease_owner=None)
        .values_list("lease_owner", flat=True)
        .distinct()
    )
    owners |= set(
        LlmRequest.objects.filter(status="in_flight", route="direct", lease_expires_at__gt=now)
        .exclude(lease_owner=None)
        .values_list("lease_owner", flat=True)
        .distinct()
    )
    owners |= set(
        SchedulerLock.objects.filter(expires_at__gt=now)
        .exclude(owner="")
        .values_list("owner", flat=True)
    )
    dead = sorted(o for o in owners if (pid := _owner_pid(o)) is not None and not pid_alive(pid))
    if not dead:
        return {}
    counts = {
        "batches": LlmBatch.objects.filter(lease_owner__in=dead).update(lease_expires_at=past),
        "requests": LlmRequest.objects.filter(lease_owner__in=dead, status="in_flight").update(
            lease_expires_at=past
        ),
        "locks": SchedulerLock.objects.filter(owner__in=dead).update(expires_at=past),
    }
    # A submit lease also gates its redispatch via next_poll_at.
    LlmBatch.objects.filter(lease_owner__in=dead, status="submitting").update(next_poll_at=past)
    return {k: v for k, v in counts.items() if v}


def pool_children(child: Child) -> list[int]:
    """Pids of a Celery worker's prefork pool processes."""
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(child.popen.pid)], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return []
    return [int(p) for p in out.split() if pid_alive(int(p))]  # not zombies awaiting reaping


# --- phases (where to strike) -------------------------------------------------------------------


def phase_predicate(phase: str, run_id: int) -> Callable[[], bool]:
    """True while the run is in ``phase``: where F1/F3 kills land."""
    process = f"run:{run_id}"

    def direct() -> bool:
        return LlmRequest.objects.filter(
            process=process, status="in_flight", route="direct"
        ).exists()

    def batch(status: str, leased: bool = False) -> Callable[[], bool]:
        def pred() -> bool:
            qs = LlmBatch.objects.filter(status=status, requests__process=process)
            if leased:
                qs = qs.filter(lease_expires_at__gt=timezone.now())
            return qs.exists()

        return pred

    def advance() -> bool:
        run = Run.objects.only("current_stage", "status").get(pk=run_id)
        if run.status != "running":
            return False
        open_ = LlmRequest.objects.filter(
            process=process, stage=run.current_stage, status__in=["pending", "in_flight"]
        ).exists()
        return (
            not open_
            and LlmRequest.objects.filter(process=process, stage=run.current_stage).exists()
        )

    table: dict[str, Callable[[], bool]] = {
        "direct": direct,
        "submit": batch("submitting"),
        "poll": batch("running", leased=True),
        "finalize": batch("finalizing"),
        "advance": advance,
        "any": lambda: True,
    }
    return table[phase]


def strike_when(
    ctx: Live, run_id: int, phase: str, *, timeout: float = 40.0, check: bool = True
) -> str:
    """Wait for ``phase`` (then a seeded sub-second delay); returns the phase actually hit."""
    hit = wait_until(
        lambda: phase_predicate(phase, run_id)() or run_status(run_id) in TERMINAL,
        timeout=timeout,
        ctx=ctx if check else None,
        poll=0.02,
    )
    if run_status(run_id) in TERMINAL:
        return "after_end"
    time.sleep(ctx.rng.uniform(0.0, 0.3))
    return phase if hit else "random"


# --- the verdict ----------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    scenario: str
    seed: int
    status: str
    ok: bool
    lost: int
    duplicate_artifacts: int
    extra_submissions: int
    extra_in_flight: int
    recovery_s: float | None
    run_s: float
    violations: dict[str, int]
    notes: list[str]
    report: VerifyReport | None = None
    # Direct calls whose worker died mid-call: the provider may have answered (and billed)
    # and the key was called again as the next attempt (PROOF.md F1: allowed, reported).
    lost_in_flight_calls: int = 0

    def line(self) -> str:
        return (
            f"{self.scenario} seed={self.seed} status={self.status} ok={self.ok} lost={self.lost} "
            f"dup_artifacts={self.duplicate_artifacts} extra_submissions={self.extra_submissions} "
            f"in_flight_calls_repeated={self.lost_in_flight_calls} recovery_s={self.recovery_s} "
            f"run_s={self.run_s:.1f} violations={self.violations}"
        )


def verdict(
    ctx: Live,
    scenario: str,
    run_id: int,
    *,
    started: float,
    recovery: list[float],
    allow_in_flight_extras: bool = False,
) -> ScenarioResult:
    """Verify the run with the simulator's counts and summarize the PROOF.md metrics."""
    close_old_connections()
    run = Run.objects.select_related("experiment").get(pk=run_id)
    report = verify_run(run=run, submissions=fetch_submissions(ctx.sim.url))
    v = {x.code: x.count for x in report.violations}
    subs = report.stats.get("submissions", {})
    extra = int(subs.get("extra", 0))
    in_flight = int(subs.get("extra_in_flight_at_crash", 0))
    ok = report.ok
    if not ok and allow_in_flight_extras and set(v) == {"extra_submission"} and extra == in_flight:
        ok = True  # PROOF.md F1: only calls in flight at the kill may repeat (reported)
    if run.status not in TERMINAL:
        ok = False
        v["not_terminal"] = 1
    return ScenarioResult(
        scenario=scenario,
        seed=ctx.seed,
        status=run.status,
        ok=ok,
        lost=v.get("lost_target", 0) + v.get("target_not_final", 0),
        duplicate_artifacts=v.get("duplicate_artifact", 0) + v.get("artifact_request_mismatch", 0),
        extra_submissions=extra,
        extra_in_flight=in_flight,
        recovery_s=max(recovery) if recovery else None,
        run_s=round(time.monotonic() - started, 1),
        violations=v,
        notes=ctx.notes,
        report=report,
        lost_in_flight_calls=int(report.stats.get("direct_calls_lost_in_flight", 0)),
    )


def ledger_types(run_id: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in RunEvent.objects.filter(process=f"run:{run_id}").values_list("event_type", flat=True):
        out[t] = out.get(t, 0) + 1
    return out


def batches_of(run_id: int) -> Any:
    return LlmBatch.objects.filter(Q(requests__process=f"run:{run_id}")).distinct()
