"""Rate-limit reservations for the transport (policies.limiter does the bucket maths).

Reserve before a call (capacity taken up front, with estimates), settle after (observed usage
replaces the estimate), refund when nothing reached the provider. A denial defers the work to
``retry_after``; it never spins. A limiter outage also defers (never silently unlimited).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestration.transport.policy import TransportPolicy
from policies.limiter import Demand, LimiterUnavailable, get_limiter

logger = logging.getLogger(__name__)

UNAVAILABLE_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class Admission:
    granted: bool
    retry_after: float


def direct_demands(
    policy: TransportPolicy, *, requests: int, input_tokens: int, output_tokens: int
) -> list[Demand]:
    demands: list[Demand] = []
    if policy.requests_per_minute:
        demands.append(
            Demand(
                bucket=policy.bucket("requests_per_minute"),
                dimension="requests",
                kind="rate",
                limit=float(policy.requests_per_minute),
                amount=float(requests),
            )
        )
    if policy.input_tokens_per_minute:
        demands.append(
            Demand(
                bucket=policy.bucket("input_tokens_per_minute"),
                dimension="input_tokens",
                kind="rate",
                limit=float(policy.input_tokens_per_minute),
                amount=float(input_tokens),
            )
        )
    if policy.output_tokens_per_minute:
        demands.append(
            Demand(
                bucket=policy.bucket("output_tokens_per_minute"),
                dimension="output_tokens",
                kind="rate",
                limit=float(policy.output_tokens_per_minute),
                amount=float(output_tokens),
            )
        )
    return demands


def batch_demands(policy: TransportPolicy, *, input_tokens: int) -> list[Demand]:
    if not policy.batch_enqueued_tokens:
        return []
    return [
        Demand(
            bucket=policy.bucket("batch_enqueued_tokens"),
            dimension="batch_enqueued_tokens",
            kind="gauge",
            limit=float(policy.batch_enqueued_tokens),
            amount=float(input_tokens),
        )
    ]


def admit(*, reservation_id: str, demands: list[Demand]) -> Admission:
    if not demands:
        return Admission(granted=True, retry_after=0.0)
    try:
        res = get_limiter().reserve(reservation_id=reservation_id, demands=demands)
    except LimiterUnavailable:
        logger.warning("rate limiter unavailable; deferring", exc_info=True)
        return Admission(granted=False, retry_after=UNAVAILABLE_RETRY_S)
    retry = res.retry_after if res.retry_after is not None else 60.0
    return Admission(granted=res.granted, retry_after=max(float(retry), 0.5))


def release(*, reservation_id: str) -> None:
    """Return gauge holdings (a batch ended). Best effort: a lost release heals by TTL."""
    try:
        get_limiter().release(reservation_id=reservation_id)
    except LimiterUnavailable:
        logger.warning("rate limiter unavailable on release %s", reservation_id)


def refund(*, reservation_id: str) -> None:
    try:
        get_limiter().refund(reservation_id=reservation_id)
    except LimiterUnavailable:
        logger.warning("rate limiter unavailable on refund %s", reservation_id)


def settle(
    *,
    reservation_id: str,
    policy: TransportPolicy,
    requests: int,
    input_tokens: int,
    output_tokens: int,
) -> None:
    """Replace the estimates of a direct-call reservation with observed usage."""
    actual: dict[str, float] = {}
    if policy.requests_per_minute:
        actual[policy.bucket("requests_per_minute") + ":requests"] = float(requests)
    if policy.input_tokens_per_minute:
        actual[policy.bucket("input_tokens_per_minute") + ":input_tokens"] = float(input_tokens)
    if policy.output_tokens_per_minute:
        actual[policy.bucket("output_tokens_per_minute") + ":output_tokens"] = float(output_tokens)
    if not actual:
        return
    try:
        get_limiter().settle(reservation_id=reservation_id, actual=actual)
    except LimiterUnavailable:
        logger.warning("rate limiter unavailable on settle %s", reservation_id)
