"""A client that disconnects mid-upload is logged as one INFO line, not an ERROR traceback."""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from orchestration.simulator import SimulatorHandle


def _half_sent_post(url: str, path: str) -> None:
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=5) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer sk-simulator\r\nContent-Length: 100000\r\n\r\n"
            '{"model": "gpt-4.1-mini", "messages": ['.encode()
        )
        time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def test_disconnect_mid_body_is_not_an_error(
    sim: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _half_sent_post(sim.url, "/openai/v1/chat/completions")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        "client went away" in r.getMessage() for r in caplog.records
    ):
        time.sleep(0.05)
    gone = [r for r in caplog.records if "client went away" in r.getMessage()]
    assert gone, [r.getMessage() for r in caplog.records]
    assert gone[0].levelno == logging.INFO
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    # and the simulator still serves the next request
    with httpx.Client(base_url=sim.url, timeout=5) as client:
        assert client.get("/_sim/health").status_code == 200
