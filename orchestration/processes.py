"""Start and stop the engine's real processes (simulator, worker, beat) as children.

Used by the demo (README command 1), the real-worker tests and the chaos suite, so they all
exercise the same command lines an operator runs. Each child gets its own process group so a
stop (or a chaos ``kill -9``) takes its pool children with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from judge_project.celery import ALL_QUEUES

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait(timeout=5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Processes:
    """A set of children sharing one environment."""

    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        # The child writes through its own copy of the descriptor; ours is closed at once.
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop/kill takes the pool with it
            )
        child = Child(name=name, popen=popen, log_path=log_path)
        self.children.append(child)
        return child

    def simulator(self, *, port: int, batch_duration: float = 0.0, faults: str | None = None,
                  seed: int = 0, data_dir: Path | None = None) -> tuple[Child, str]:  # fmt: skip
        argv = [
            sys.executable, "manage.py", "provider_simulator", "--port", str(port),
            "--batch-duration", str(batch_duration), "--seed", str(seed),
        ]  # fmt: skip
        if faults:
            argv += ["--faults", faults]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        child = self.spawn("simulator", argv)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/_sim/health", timeout=30, child=child)
        return child, url

    def worker(self, *, name: str = "worker", concurrency: int = 2, queues: str = ALL_QUEUES,
               loglevel: str = "WARNING") -> Child:  # fmt: skip
        argv = [
            sys.executable, "-m", "celery", "-A", "judge_project", "worker",
            "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h", "-l", loglevel,
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        return self.spawn(name, argv)

    def beat(self, *, loglevel: str = "WARNING") -> Child:
        schedule_dir = self.log_dir
        argv = [
            sys.executable, "-m", "celery", "-A", "judge_project", "beat",
            "-S", "django_celery_beat.schedulers:DatabaseScheduler", "-l", loglevel,
            "--pidfile", str(schedule_dir / "beat.pid"),
        ]  # fmt: skip
        with contextlib.suppress(FileNotFoundError):
            (schedule_dir / "beat.pid").unlink()
        return self.spawn("beat", argv)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()


def wait_http(url: str, *, timeout: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


@contextlib.contextmanager
def processes(env: Mapping[str, str], log_dir: Path) -> Iterator[Processes]:
    procs = Processes(env=dict(env), log_dir=log_dir)
    try:
        yield procs
    finally:
        procs.stop_all()
