"""Environment preflight: are the credentials a spec needs present *before* a run starts?

Why before: a run with a missing key would only fail at its first provider call, after rows
were written and maybe after other providers' batches were paid for. The run-start service
calls this (and raises :class:`PreflightError`) before writing anything.

A provider requirement is satisfied by any of:
1. the key setting (``settings.OPENAI_API_KEY`` …, which reads ``NAME`` or ``NAME_FILE``);
2. ``settings.JUDGE_SIMULATOR_URL`` (simulator mode replaces every provider);
3. the provider's base URL setting pointing at loopback, i.e. a locally run simulator.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

from configs_app.spec import ExperimentSpec, parse_spec


@dataclass(frozen=True)
class ProviderRequirement:
    """How one credential can be satisfied."""

    name: str
    base_url_setting: str
    label: str


REQUIREMENTS: dict[str, ProviderRequirement] = {
    "OPENAI_API_KEY": ProviderRequirement("OPENAI_API_KEY", "OPENAI_BASE_URL", "OpenAI"),
    "ANTHROPIC_API_KEY": ProviderRequirement(
        "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "Anthropic"
    ),
    "FIRECRAWL_API_KEY": ProviderRequirement(
        "FIRECRAWL_API_KEY", "FIRECRAWL_API_URL", "Firecrawl search"
    ),
}
PROVIDER_KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass(frozen=True)
class MissingRequirement:
    name: str
    reason: str
    fix: str


@dataclass(frozen=True)
class SatisfiedRequirement:
    name: str
    via: str  # "OPENAI_API_KEY is set", "JUDGE_SIMULATOR_URL (simulator)", …


@dataclass(frozen=True)
class PreflightResult:
    missing: list[MissingRequirement]
    satisfied: list[SatisfiedRequirement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def raise_if_missing(self) -> None:
        if self.missing:
            raise PreflightError(self.missing)


class PreflightError(Exception):
    """Raised (e.g. by run start) when required credentials are missing; carries the list."""

    def __init__(self, missing: list[MissingRequirement]) -> None:
        self.missing = list(missing)
        super().__init__(
            "; ".join(f"{item.name} missing: {item.reason} (fix: {item.fix})" for item in missing)
        )

    def as_issues(self) -> list[dict[str, str]]:
        return [{"path": m.name, "message": m.reason, "fix": m.fix} for m in self.missing]


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    host = urlparse(url).hostname
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _setting(name: str) -> Any:
    return getattr(settings, name, None)


def _as_spec(spec: ExperimentSpec | Mapping[str, Any]) -> ExperimentSpec:
    return spec if isinstance(spec, ExperimentSpec) else parse_spec(spec)


def requirement_reasons(spec: ExperimentSpec | Mapping[str, Any]) -> dict[str, str]:
    """Each credential the spec needs, with why (which field uses it)."""
    spec = _as_spec(spec)
    models = spec.resolved_models()
    reasons: dict[str, list[str]] = {}
    for path, model_id in (
        ("rubric.model", spec.rubric.model),
        ("scoring.model", spec.scoring.model),
    ):
        key = PROVIDER_KEYS[models[model_id].provider]
        reasons.setdefault(key, []).append(f"{path}={model_id}")
    if spec.evidence.window_tags:
        reasons.setdefault("FIRECRAWL_API_KEY", []).append("evidence.window_tags (news search)")
    return {name: "needed by " + ", ".join(uses) for name, uses in sorted(reasons.items())}


def requirements_for_spec(spec: ExperimentSpec | Mapping[str, Any]) -> list[str]:
    """The environment settings a spec needs: provider keys for its models, and the search key
    when it builds evidence from windows. Sorted, without duplicates."""
    return sorted(requirement_reasons(spec))


def preflight_check(
    required: list[str], *, needed_by: Mapping[str, str] | None = None
) -> PreflightResult:
    """Check each required setting; ``needed_by`` adds why each one is required."""
    simulator = _setting("JUDGE_SIMULATOR_URL")
    missing: list[MissingRequirement] = []
    satisfied: list[SatisfiedRequirement] = []
    for name in sorted(set(required)):
        requirement = REQUIREMENTS.get(name)
        if _setting(name):
            satisfied.append(SatisfiedRequirement(name, f"{name} is set"))
            continue
        if requirement is not None and simulator:
            satisfied.append(SatisfiedRequirement(name, f"JUDGE_SIMULATOR_URL={simulator}"))
            continue
        base_url = _setting(requirement.base_url_setting) if requirement else None
        if requirement is not None and _is_loopback(base_url):
            satisfied.append(
                SatisfiedRequirement(
                    name, f"{requirement.base_url_setting}={base_url} (local simulator)"
                )
            )
            continue
        why = f"{name} is not set"
        if needed_by and name in needed_by:
            why = f"{why}; {needed_by[name]}"
        fix = f"set {name} in the environment (or {name}_FILE naming a file), see .env.example"
        if requirement is not None:
            fix += (
                f"; or set JUDGE_SIMULATOR_URL to use the built-in simulator instead of "
                f"{requirement.label}"
            )
        missing.append(MissingRequirement(name=name, reason=why, fix=fix))
    return PreflightResult(missing=missing, satisfied=satisfied)


def preflight_for_spec(spec: ExperimentSpec | Mapping[str, Any]) -> PreflightResult:
    """``preflight_check`` for everything ``spec`` needs, with reasons."""
    reasons = requirement_reasons(spec)
    return preflight_check(sorted(reasons), needed_by=reasons)
