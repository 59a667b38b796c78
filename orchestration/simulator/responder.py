"""Where simulated model outputs come from.

The simulator knows nothing about judging: it asks a *responder*
``respond(*, model, system, user, seed) -> str`` for each row or call. The judging code ships
one that produces parseable rubric/verdict text; the simulator loads it by dotted path and falls
back to :func:`generic_respond` (with a log line) when it cannot be imported, so the transport
can be exercised before, or without, the domain code.
"""

from __future__ import annotations

import hashlib
import importlib
import logging

from orchestration.simulator.config import Responder, SimulatorConfig, responder_path_from_env

log = logging.getLogger(__name__)

_GARBAGE = "\x00\ufffd<<<garbled output>>> }{ ]["


def generic_respond(*, model: str, system: str | None, user: str, seed: str) -> str:
    """A deterministic, domain-free answer: same inputs, same text."""
    digest = hashlib.sha256(f"{model}\x1f{system or ''}\x1f{user}\x1f{seed}".encode()).hexdigest()
    head = " ".join(user.split())[:120]
    return f"Simulated answer from {model} (seed {seed}, {digest[:12]}).\nRe: {head}\nOK"


def garbage_text(seed: str) -> str:
    """What ``malformed_output`` puts in place of the responder's text."""
    return f"{_GARBAGE} {hashlib.sha256(seed.encode()).hexdigest()[:8]}"


def load_responder(config: SimulatorConfig) -> tuple[Responder, str]:
    """The responder to use and a label for logs/stats."""
    if config.responder is not None:
        return config.responder, getattr(config.responder, "__qualname__", "custom")
    path = config.responder_path or responder_path_from_env()
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        log.warning(
            "simulator responder %s not importable (%s); using the generic responder", path, exc
        )
        return generic_respond, "generic"
    if not callable(fn):
        log.warning("simulator responder %s is not callable; using the generic responder", path)
        return generic_respond, "generic"
    return fn, path
