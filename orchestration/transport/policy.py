"""Transport knobs for one (provider, model), resolved from policy rows.

Shard sizes, concurrency and live rate buckets are properties of the provider account and
model, so they resolve at ``global -> provider -> model`` scope each tick (policy edits take
effect without restarting anything). Per-run knobs (attempts, backoff) are frozen on each
request row at enqueue time from the run's resolved policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.resolver import EffectivePolicy, policy_resolve


@dataclass(frozen=True, slots=True)
class TransportPolicy:
    provider: str
    model: str
    batch_mode: str
    min_batch_size: int
    max_batch_size: int
    max_batch_bytes: int
    max_concurrent_batches: int
    poll_interval_s: float
    max_batch_retries: int
    request_timeout_s: float
    direct_concurrency: int
    requests_per_minute: int | None
    input_tokens_per_minute: int | None
    output_tokens_per_minute: int | None
    batch_enqueued_tokens: int | None
    effective: EffectivePolicy

    def bucket(self, field: str) -> str:
        """The live bucket for a limit: owned by the scope that supplied it.

        A model-scope limit is shared by every run of that model; a global or provider limit
        by everything under it (the owner key already says which).
        """
        return self.effective.bucket_owner(field)


def _int(value: object, default: int) -> int:
    return int(value) if value is not None else default  # type: ignore[call-overload]


def _float(value: object, default: float) -> float:
    return float(value) if value is not None else default  # type: ignore[arg-type]


def transport_policy(*, provider: str, model: str) -> TransportPolicy:
    eff = policy_resolve(team=None, provider=provider, model=model, experiment=None)
    return TransportPolicy(
        provider=provider,
        model=model,
        batch_mode=str(eff.batch_mode or "auto"),
        min_batch_size=_int(eff.min_batch_size, 30),
        max_batch_size=_int(eff.max_batch_size, 500),
        max_batch_bytes=_int(eff.max_batch_bytes, 100_000_000),
        max_concurrent_batches=_int(eff.max_concurrent_batches, 8),
        poll_interval_s=_float(eff.poll_interval_seconds, 20.0),
        max_batch_retries=_int(eff.max_batch_retries, 2),
        request_timeout_s=_float(eff.request_timeout_seconds, 120.0),
        direct_concurrency=_int(eff.direct_concurrency, 8),
        requests_per_minute=eff.requests_per_minute,
        input_tokens_per_minute=eff.input_tokens_per_minute,
        output_tokens_per_minute=eff.output_tokens_per_minute,
        batch_enqueued_tokens=eff.batch_enqueued_tokens,
        effective=eff,
    )
