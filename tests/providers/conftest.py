"""Fixtures: a simulator per test (background thread, own data dir) and real SDK adapters on it.

These are pure HTTP tests (no database). Each test gets a fresh simulator so fault rules,
batch listings and the submission log never leak between tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from orchestration.simulator import SimulatorConfig, SimulatorHandle, run_in_thread
from orchestration.transport.providers import AnthropicAdapter, OpenAIAdapter
from orchestration.transport.providers.base import (
    BatchInfo,
    BatchState,
    ChatRequest,
    ProviderAdapter,
)

CLIENT_TIMEOUT_S = 2.0
_OPEN_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    """SDK clients made by the helpers below are closed after each test (no leaked sockets)."""
    yield
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()


def echo_responder(*, model: str, system: str | None, user: str, seed: str) -> str:
    """Deterministic, domain-free: lets tests check which request a result belongs to."""
    return f"ECHO[{seed}] {user[:40]}"


@pytest.fixture
def sim_factory(tmp_path) -> Iterator[Callable[..., SimulatorHandle]]:
    handles: list[SimulatorHandle] = []

    def start(**kwargs: Any) -> SimulatorHandle:
        kwargs.setdefault("responder", echo_responder)
        kwargs.setdefault("data_dir", tmp_path / f"sim{len(handles)}")
        handle = run_in_thread(SimulatorConfig(**kwargs))
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., SimulatorHandle]) -> SimulatorHandle:
    return sim_factory()


@pytest.fixture
def admin(sim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=30) as client:
        yield client


def set_faults(admin: httpx.Client, spec: Any, **extra: Any) -> dict[str, Any]:
    body = {"faults": spec, **extra} if extra else spec
    resp = admin.post("/_sim/faults", json=body)
    assert resp.status_code == 200, resp.text
    view: dict[str, Any] = resp.json()
    return view


def openai_client(sim: SimulatorHandle, timeout: float = CLIENT_TIMEOUT_S) -> openai.OpenAI:
    t = httpx2.Timeout(timeout, connect=timeout)
    client = openai.OpenAI(
        api_key="sk-test", base_url=sim.openai_base_url, timeout=t, max_retries=0
    )
    _OPEN_CLIENTS.append(client)
    return client


def anthropic_client(
    sim: SimulatorHandle, timeout: float = CLIENT_TIMEOUT_S
) -> anthropic.Anthropic:
    t = httpx2.Timeout(timeout, connect=timeout)
    client = anthropic.Anthropic(
        api_key="sk-ant-test", base_url=sim.anthropic_base_url, timeout=t, max_retries=0
    )
    _OPEN_CLIENTS.append(client)
    return client


@pytest.fixture
def oa(sim) -> OpenAIAdapter:
    return OpenAIAdapter(openai_client(sim, timeout=30))


@pytest.fixture
def an(sim) -> AnthropicAdapter:
    return AnthropicAdapter(anthropic_client(sim, timeout=30))


@pytest.fixture(params=["openai", "anthropic"])
def adapter(request, sim):
    if request.param == "openai":
        return OpenAIAdapter(openai_client(sim, timeout=30))
    return AnthropicAdapter(anthropic_client(sim, timeout=30))


def make_requests(
    n: int, *, start: int = 1, model: str = "gpt-4.1-mini", system: str | None = "Be terse."
) -> list[ChatRequest]:
    return [
        ChatRequest(
            custom_id=f"r{i}",
            model=model,
            system=system,
            user=f"Question number {i}: what is {i} + {i}?",
            max_output_tokens=200,
            temperature=0.0,
        )
        for i in range(start, start + n)
    ]


def model_for(adapter) -> str:
    return "gpt-4.1-mini" if adapter.name == "openai" else "claude-haiku-4-5"


def wait_done(adapter: ProviderAdapter, batch_id: str, timeout: float = 30.0) -> BatchInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = adapter.get_batch(batch_id)
        if info.state is not BatchState.RUNNING:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still running: {info}")
        time.sleep(0.05)
