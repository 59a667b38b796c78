"""Fault rules for the provider simulator.

Why rules and not flags: chaos tests need to aim a fault at one provider and one operation
("the next 3 OpenAI batch creations answer 500", "5% of Anthropic rows are missing") while
everything else behaves. Every knob is therefore one rule::

    {"fault": "http_429", "rate": 0.1, "retry_after": 2, "provider": "openai", "ops": ["chat"]}

``provider`` (``openai``/``anthropic``) and ``ops`` (operation names or prefixes, see
:data:`OPS`) narrow where it applies; ``count`` makes it a burst (the next N matching events),
otherwise ``rate`` is a probability per event (default 1.0). Limits (``rpm``, ``tpm``,
``enqueued_token_limit``) use ``limit`` instead.

A flat shorthand is accepted too and normalized to rules: ``{"row_error_rate": 0.05,
"http_500": {"count": 3}, "rpm": 600}`` (a number is the rate, or the limit for limit rules;
a trailing ``_rate`` is dropped; ``fail``/``expire``/``cancel``/``expire_partial`` are aliases
of the batch outcome rules).

Randomness comes from seeded ``random.Random`` instances owned by the simulator state, so a
run with the same seed and the same request order replays the same faults.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Faults decided once per HTTP call, before (or, with "when": "after", after) the handler.
TRANSPORT_FAULTS = frozenset(
    {
        "http_429",
        "http_500",
        "http_503",
        "http_529",
        "quota",
        "timeout",
        "latency",
        "drop_connection",
    }
)
# Decided once per batch at creation: how the batch ends.
BATCH_FAULTS = frozenset({"batch_fail", "batch_expire", "batch_cancel"})
# Decided per result row when a batch's results are generated.
ROW_FAULTS = frozenset(
    {"row_error", "missing_row", "duplicate_row", "malformed_output", "malformed_line"}
)
# Decided per results download (OpenAI file content, Anthropic results_url).
STREAM_FAULTS = frozenset({"truncate_results"})
# Enforced limits (not random): requests/tokens per minute on direct calls, enqueued batch
# input tokens on batch creation.
LIMIT_FAULTS = frozenset({"rpm", "tpm", "enqueued_token_limit"})

ALL_FAULTS = TRANSPORT_FAULTS | BATCH_FAULTS | ROW_FAULTS | STREAM_FAULTS | LIMIT_FAULTS

# Operation names used for scoping (a rule's "ops" entry matches a name or a prefix before "_").
OPS = (
    "files_create",
    "files_get",
    "files_content",
    "files_delete",
    "batches_create",
    "batches_list",
    "batches_get",
    "batches_cancel",
    "results",
    "chat",
    "messages",
)

_ALIASES = {
    "fail": "batch_fail",
    "expire": "batch_expire",
    "expire_partial": "batch_expire",
    "cancel": "batch_cancel",
    "row_error": "row_error",
    "missing": "missing_row",
    "duplicate": "duplicate_row",
    "missing_row": "missing_row",
    "duplicate_row": "duplicate_row",
    "malformed": "malformed_line",
    "http_429": "http_429",
    "rate_limit": "http_429",
    "drop": "drop_connection",
    "truncate": "truncate_results",
}

_PARAM_KEYS = frozenset(
    {
        "retry_after",  # seconds, http_429/quota/http_5xx and limits (Retry-After header)
        "sleep_s",  # timeout/latency: how long to stall
        "jitter_s",  # latency: uniform extra 0..jitter_s
        "when",  # timeout/drop_connection: "before" (default) or "after" the handler ran
        "fraction",  # truncate_results: share of the body sent before the cut
        "partial",  # batch_expire/batch_cancel: share of rows processed before the end
        "rest",  # batch_expire/batch_cancel: "error" (real APIs) or "omit" the unprocessed rows
        "status_code",  # row_error: HTTP status of the row (OpenAI) / error type (Anthropic)
        "code",  # row_error/batch_fail: error code
        "message",  # row_error/batch_fail: error message
        "limit",  # rpm/tpm/enqueued_token_limit
        "per_model",  # limits: one bucket per model (default true) or per provider
        "variant",  # malformed_line: "truncate" (id recoverable), "garbage", "mixed" (default)
    }
)


class FaultConfigError(ValueError):
    """A fault specification that cannot be understood; the admin endpoint answers 400."""


@dataclass(slots=True)
class FaultRule:
    """One fault or limit, optionally scoped to a provider and operations."""

    fault: str
    rate: float | None = None
    count: int | None = None
    provider: str | None = None
    ops: tuple[str, ...] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    def applies(self, provider: str | None, op: str | None) -> bool:
        if self.provider is not None and provider is not None and self.provider != provider:
            return False
        if self.ops is None or op is None:
            return True
        return any(op == o or op.startswith(o + "_") for o in self.ops)

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fault": self.fault, **self.params, "fired": self.fired}
        if self.rate is not None:
            out["rate"] = self.rate
        if self.count is not None:
            out["count"] = self.count
        if self.provider is not None:
            out["provider"] = self.provider
        if self.ops is not None:
            out["ops"] = list(self.ops)
        return out


def _canonical_name(raw: str) -> str:
    name = raw.strip()
    if name in ALL_FAULTS:
        return name
    if name.endswith("_rate") and name[: -len("_rate")] in ALL_FAULTS | set(_ALIASES):
        name = name[: -len("_rate")]
    name = _ALIASES.get(name, name)
    if name not in ALL_FAULTS:
        raise FaultConfigError(f"unknown fault {raw!r}; known: {sorted(ALL_FAULTS)}")
    return name


def _rule_from_mapping(spec: Mapping[str, Any]) -> FaultRule:
    if "fault" not in spec:
        raise FaultConfigError(f"a rule needs 'fault': {dict(spec)!r}")
    name = _canonical_name(str(spec["fault"]))
    rate = spec.get("rate")
    count = spec.get("count")
    provider = spec.get("provider")
    ops = spec.get("ops")
    if rate is not None:
        rate = float(rate)
        if not 0.0 <= rate <= 1.0:
            raise FaultConfigError(f"{name}: rate must be in [0, 1], got {rate}")
    if count is not None:
        count = int(count)
        if count < 0:
            raise FaultConfigError(f"{name}: count must be >= 0")
    if provider is not None and provider not in {"openai", "anthropic"}:
        raise FaultConfigError(f"{name}: provider must be openai or anthropic")
    if isinstance(ops, str):
        ops = [ops]
    if ops is not None:
        ops = tuple(str(o) for o in ops)
    params = {
        k: v
        for k, v in spec.items()
        if k not in {"fault", "rate", "count", "provider", "ops", "fired"}
    }
    unknown = set(params) - _PARAM_KEYS
    if unknown:
        raise FaultConfigError(f"{name}: unknown parameters {sorted(unknown)}")
    if name in LIMIT_FAULTS:
        if "limit" not in params:
            raise FaultConfigError(f"{name}: needs 'limit'")
        params["limit"] = float(params["limit"])
    if params.get("when", "before") not in {"before", "after"}:
        raise FaultConfigError(f"{name}: 'when' must be before or after")
    if params.get("rest", "error") not in {"error", "omit"}:
        raise FaultConfigError(f"{name}: 'rest' must be error or omit")
    if rate is None and count is None and name not in LIMIT_FAULTS:
        rate = 1.0
    return FaultRule(fault=name, rate=rate, count=count, provider=provider, ops=ops, params=params)


def parse_faults(spec: Any) -> list[FaultRule]:
    """Normalize a rules list, a ``{"faults": [...]}`` object or the flat shorthand."""
    if spec is None:
        return []
    if isinstance(spec, Mapping) and "faults" in spec:
        return parse_faults(spec["faults"])
    if isinstance(spec, Mapping) and "fault" in spec:
        return [_rule_from_mapping(spec)]
    if isinstance(spec, list | tuple):
        rules: list[FaultRule] = []
        for item in spec:
            if not isinstance(item, Mapping):
                raise FaultConfigError(f"a rule must be an object, got {item!r}")
            rules.append(_rule_from_mapping(item))
        return rules
    if isinstance(spec, Mapping):
        rules = []
        for key, value in spec.items():
            if key in {"seed", "batch_duration_s", "mode"}:
                continue  # top-level config keys sharing the object
            name = _canonical_name(str(key))
            if isinstance(value, Mapping):
                rules.append(_rule_from_mapping({"fault": name, **value}))
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultConfigError(f"{key}: expected a number or an object, got {value!r}")
            elif name in LIMIT_FAULTS:
                rules.append(_rule_from_mapping({"fault": name, "limit": value}))
            elif key == "expire_partial":
                rules.append(_rule_from_mapping({"fault": name, "partial": value}))
            else:
                rules.append(_rule_from_mapping({"fault": name, "rate": value}))
        return rules
    raise FaultConfigError(f"cannot read faults from {type(spec).__name__}")


class FaultSet:
    """The live rules. Thread-safe: batch generation runs in worker threads."""

    def __init__(self, rules: Iterable[FaultRule] = ()) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = list(rules)

    def replace(self, rules: Iterable[FaultRule]) -> None:
        with self._lock:
            self._rules = list(rules)

    def extend(self, rules: Iterable[FaultRule]) -> None:
        with self._lock:
            self._rules.extend(rules)

    def snapshot(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def to_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._rules]

    def matching(
        self, kinds: frozenset[str], provider: str | None, op: str | None
    ) -> list[FaultRule]:
        with self._lock:
            return [r for r in self._rules if r.fault in kinds and r.applies(provider, op)]

    def fire(self, rule: FaultRule, rng: random.Random) -> bool:
        """Decide one event: a burst consumes its count, otherwise roll against the rate."""
        with self._lock:
            if rule.count is not None:
                if rule.count <= 0:
                    return False
                rule.count -= 1
                rule.fired += 1
                return True
            if rule.rate is not None and rng.random() < rule.rate:
                rule.fired += 1
                return True
            return False

    def first_firing(
        self, kinds: frozenset[str], provider: str | None, op: str | None, rng: random.Random
    ) -> FaultRule | None:
        """The first matching rule that fires (each candidate rolls once, in order)."""
        for rule in self.matching(kinds, provider, op):
            if self.fire(rule, rng):
                return rule
        return None
