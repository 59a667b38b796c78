"""Simulator configuration: one JSON object, also accepted by the CLI and the admin API.

Format (every key optional)::

    {
      "seed": 0,                  # seeds every random decision (ids, faults, row fates)
      "batch_duration_s": 0,      # 0 = a batch ends at its first retrieval after creation
      "faults": [ {rule}, ... ]   # see orchestration.simulator.faults (or the flat shorthand)
    }
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.simulator.faults import FaultConfigError, FaultRule, parse_faults

Responder = Callable[..., str]
"""``respond(*, model: str, system: str | None, user: str, seed: str) -> str``."""

DEFAULT_RESPONDER_PATH = "orchestration.judging.sim_responder.respond"


@dataclass(slots=True)
class SimulatorConfig:
    """How one simulator instance behaves. ``port=0`` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 0
    batch_duration_s: float = 0.0
    seed: int = 0
    data_dir: Path | None = None  # None: a fresh temporary directory, removed on stop
    faults: list[FaultRule] = field(default_factory=list)
    responder: Responder | None = None  # wins over responder_path
    responder_path: str | None = None  # dotted path; else env/setting, else the default
    public_url: str | None = None  # base of results_url; default: the URL the client used
    cancel_delay_s: float = 0.0  # how long a batch stays "cancelling"/"canceling"
    max_upload_bytes: int = 200 * 1024 * 1024  # OpenAI batch input file limit
    max_anthropic_body_bytes: int = 256 * 1024 * 1024  # Anthropic batch request limit

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], **overrides: Any) -> SimulatorConfig:
        """Build from the JSON format above; ``overrides`` (CLI flags) win when not None."""
        cfg = cls()
        if "seed" in data:
            cfg.seed = int(data["seed"])
        if "batch_duration_s" in data:
            cfg.batch_duration_s = float(data["batch_duration_s"])
        if "cancel_delay_s" in data:
            cfg.cancel_delay_s = float(data["cancel_delay_s"])
        cfg.faults = parse_faults(data.get("faults", []))
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        if cfg.batch_duration_s < 0:
            raise FaultConfigError("batch_duration_s must be >= 0")
        return cfg


def load_json_arg(raw: str | None) -> Any:
    """Read a ``JSON`` or ``@file`` CLI argument."""
    if raw is None or raw == "":
        return None
    if raw.startswith("@"):
        return json.loads(Path(raw[1:]).read_text(encoding="utf-8"))
    return json.loads(raw)


def responder_path_from_env() -> str:
    """Dotted path of the responder: setting, then env, then the project default."""
    try:
        from django.conf import settings

        if settings.configured:
            configured = getattr(settings, "JUDGE_SIMULATOR_RESPONDER", None)
            if configured:
                return str(configured)
    except Exception:  # noqa: S110 - Django absent or not configured: fall through to env
        pass
    return os.environ.get("JUDGE_SIMULATOR_RESPONDER") or DEFAULT_RESPONDER_PATH
