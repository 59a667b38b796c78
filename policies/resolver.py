"""Resolve the effective policy for one (team, provider, model, experiment) combination.

Precedence, most specific first: ``experiment > model > provider > team > global``
(ARCHITECTURE.md section 6). Each field is taken from the most specific row that sets it, so
an experiment row that only sets ``token_budget`` still inherits its rate limits from the model
row. A scope without a row, or an unknown key, is simply skipped: policies are optional
overrides and a missing one must never stop a run.

The result records *where* each value came from (``provenance``). That matters twice:

1. the admin preview shows operators why a value is what it is;
2. a limit is enforced on a live bucket owned by the scope that supplied it
   (:meth:`EffectivePolicy.bucket_owner`): a model-scope RPM is shared by every run of that
   model, an experiment-scope RPM only by that experiment's runs.

The resolved policy is frozen into the run config with :meth:`EffectivePolicy.to_json`; the
live buckets stay shared.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypedDict

from django.db.models import Q

from policies.models import POLICY_FIELDS, Policy

__all__ = [
    "POLICY_FIELDS",
    "SCOPE_PRECEDENCE",
    "EffectivePolicy",
    "Provenance",
    "policy_resolve",
]

ScopeName = Literal["global", "team", "provider", "model", "experiment"]

#: Most specific first; the first scope that sets a field wins.
SCOPE_PRECEDENCE: tuple[ScopeName, ...] = ("experiment", "model", "provider", "team", "global")

_INT_FIELDS = frozenset(POLICY_FIELDS) - {
    "retry_jitter_ratio",
    "batch_mode",
    "partial_failure_policy",
    "dollar_budget",
}
_CHOICES: dict[str, frozenset[str]] = {
    "batch_mode": frozenset(Policy.BatchMode.values),
    "partial_failure_policy": frozenset(Policy.PartialFailurePolicy.values),
}


class Provenance(TypedDict):
    """Which row supplied a field: its scope and key (``"default"`` for the global row)."""

    scope: ScopeName
    key: str


@dataclass(frozen=True, kw_only=True)
class EffectivePolicy:
    """The value of every policy field after precedence, plus where each came from.

    Fields unset at every scope are ``None`` and have ``provenance[name] is None``.
    """

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    batch_enqueued_tokens: int | None = None
    max_batch_size: int | None = None
    min_batch_size: int | None = None
    max_batch_bytes: int | None = None
    max_concurrent_batches: int | None = None
    poll_interval_seconds: int | None = None
    max_request_attempts: int | None = None
    max_batch_retries: int | None = None
    retry_backoff_seconds: int | None = None
    retry_jitter_ratio: float | None = None
    request_timeout_seconds: int | None = None
    direct_concurrency: int | None = None
    batch_mode: str | None = None
    partial_failure_policy: str | None = None
    token_budget: int | None = None
    dollar_budget: Decimal | None = None
    output_token_cap: int | None = None
    provenance: dict[str, Provenance | None] = field(default_factory=dict, compare=True)

    def value(self, name: str) -> Any:
        """The effective value of ``name`` (``KeyError`` for a name that is not a field)."""
        if name not in POLICY_FIELDS:
            raise KeyError(f"{name!r} is not a policy field; known: {', '.join(POLICY_FIELDS)}")
        return getattr(self, name)

    def bucket_owner(self, name: str) -> str:
        """The live bucket that enforces ``name``: ``global``, ``model:gpt-4.1``, ``experiment:t``…

        The scope that supplied a limit owns its bucket, so two runs share a bucket exactly
        when their limit came from the same row. Raises ``LookupError`` when the field is
        unset everywhere: there is no limit, hence no bucket.
        """
        self.value(name)
        source = self.provenance.get(name)
        if source is None:
            raise LookupError(f"{name} is not set at any scope; it has no bucket.")
        if source["scope"] == "global":
            return "global"
        return f"{source['scope']}:{source['key']}"

    def problems(self) -> list[str]:
        """Inconsistencies that only appear after mixing scopes (each row alone is valid)."""
        found: list[str] = []
        if (
            self.min_batch_size is not None
            and self.max_batch_size is not None
            and self.min_batch_size > self.max_batch_size
        ):
            found.append(
                f"min_batch_size {self.min_batch_size} (from {self._where('min_batch_size')}) "
                f"exceeds max_batch_size {self.max_batch_size} "
                f"(from {self._where('max_batch_size')}): every shard falls back to direct calls."
            )
        return found

    def _where(self, name: str) -> str:
        source = self.provenance.get(name)
        return "nowhere" if source is None else f"{source['scope']}:{source['key']}"

    def to_json(self) -> dict[str, Any]:
        """``{"fields": {name: {"value", "scope", "key"}}}``; Decimal as a string (exact)."""
        fields: dict[str, dict[str, Any]] = {}
        for name in POLICY_FIELDS:
            value = getattr(self, name)
            source = self.provenance.get(name)
            fields[name] = {
                "value": str(value) if isinstance(value, Decimal) else value,
                "scope": None if source is None else source["scope"],
                "key": None if source is None else source["key"],
            }
        return {"fields": fields}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EffectivePolicy:
        """Inverse of :meth:`to_json`, validating types.

        Fields missing from ``data`` become ``None`` and unknown names are ignored: a run
        config frozen by an older or newer version must still load (snapshots outlive schema
        changes). Wrong types raise ``ValueError`` naming the field.
        """
        raw_fields = data.get("fields") if isinstance(data, dict) else None
        if not isinstance(raw_fields, dict):
            raise ValueError("EffectivePolicy JSON must look like {'fields': {name: {...}}}.")
        values: dict[str, Any] = {}
        provenance: dict[str, Provenance | None] = {}
        for name in POLICY_FIELDS:
            entry = raw_fields.get(name)
            if entry is None:
                values[name] = None
                provenance[name] = None
                continue
            if not isinstance(entry, dict):
                raise ValueError(f"{name}: expected an object with value/scope/key.")
            values[name] = _coerce(name, entry.get("value"))
            scope, key = entry.get("scope"), entry.get("key")
            if scope is None:
                provenance[name] = None
            elif scope in SCOPE_PRECEDENCE and isinstance(key, str):
                provenance[name] = Provenance(scope=scope, key=key)
            else:
                raise ValueError(f"{name}: bad provenance scope={scope!r} key={key!r}.")
        return cls(**values, provenance=provenance)

    def replace(self, **changes: Any) -> EffectivePolicy:
        """A copy with some values changed (tests, what-if previews); provenance kept."""
        return dataclasses.replace(self, **changes)


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, got {value!r}.")
        return value
    if name == "retry_jitter_ratio":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name}: expected a number, got {value!r}.")
        return float(value)
    if name == "dollar_budget":
        try:
            return Decimal(str(value))
        except InvalidOperation as exc:
            raise ValueError(f"{name}: expected a decimal string, got {value!r}.") from exc
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise ValueError(f"{name}: {value!r} is not one of {sorted(_CHOICES[name])}.")
        return str(value)
    raise AssertionError(f"unhandled policy field {name}")  # pragma: no cover


def _clean_key(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def policy_resolve(
    *,
    team: str | None,
    provider: str | None,
    model: str | None,
    experiment: str | None,
) -> EffectivePolicy:
    """Merge the rows that apply to this combination; one query for all of them.

    ``None`` or an empty string skips that scope. Keys are matched exactly (after trimming
    surrounding whitespace), so an unknown team slug or model id just matches no row.
    """
    wanted: dict[ScopeName, str | None] = {
        "experiment": _clean_key(experiment),
        "model": _clean_key(model),
        "provider": _clean_key(provider),
        "team": _clean_key(team),
    }
    condition = Q(scope=Policy.Scope.GLOBAL)
    for scope, key in wanted.items():
        if key is not None:
            condition |= Q(scope=scope, key=key)
    rows: dict[str, Policy] = {row.scope: row for row in Policy.objects.filter(condition)}

    values: dict[str, Any] = {}
    provenance: dict[str, Provenance | None] = {}
    for name in POLICY_FIELDS:
        values[name] = None
        provenance[name] = None
        for scope in SCOPE_PRECEDENCE:
            row = rows.get(scope)
            if row is None:
                continue
            value = getattr(row, name)
            if value is not None:
                values[name] = value
                key = "default" if scope == "global" else row.key
                provenance[name] = Provenance(scope=scope, key=key)
                break
    return EffectivePolicy(**values, provenance=provenance)
