"""Offline provider simulator: OpenAI- and Anthropic-compatible HTTP APIs with fault injection.

The real adapters (official SDKs) talk to it over HTTP in tests and in the demo, so what is
tested is what runs in production. See :mod:`orchestration.simulator.server` for the URL layout,
:mod:`orchestration.simulator.config` and :mod:`orchestration.simulator.faults` for the JSON
configuration, and docs in the module docstrings of the two provider APIs.
"""

from __future__ import annotations

from orchestration.simulator.config import SimulatorConfig
from orchestration.simulator.faults import FaultConfigError, FaultRule, parse_faults
from orchestration.simulator.server import SimulatorHandle, build_app, run_forever, run_in_thread

__all__ = [
    "FaultConfigError",
    "FaultRule",
    "SimulatorConfig",
    "SimulatorHandle",
    "build_app",
    "parse_faults",
    "run_forever",
    "run_in_thread",
]
