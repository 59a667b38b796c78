"""The limiter, against both backends: Redis (DB 13) and the database (Postgres)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis
from django.db import connections
from django.test import override_settings

from policies.limiter import (
    DatabaseLimiter,
    Demand,
    Limiter,
    LimiterUnavailable,
    RedisLimiter,
    get_limiter,
    policy_demands,
)
from policies.models import Policy
from policies.resolver import policy_resolve

from .conftest import REDIS_URL


def rate(bucket: str, limit: float, amount: float, dimension: str = "requests") -> Demand:
    return Demand(bucket=bucket, dimension=dimension, kind="rate", limit=limit, amount=amount)


def gauge(bucket: str, limit: float, amount: float) -> Demand:
    return Demand(
        bucket=bucket, dimension="batch_enqueued_tokens", kind="gauge", limit=limit, amount=amount
    )


def budget(bucket: str, limit: float, amount: float) -> Demand:
    return Demand(
        bucket=bucket, dimension="token_budget", kind="budget", limit=limit, amount=amount
    )


def level(limiter: Limiter, demand: Demand) -> float:
    return limiter.level(
        bucket=demand.bucket, dimension=demand.dimension, kind=demand.kind, limit=demand.limit
    )


# --- rate buckets ------------------------------------------------------------------------------


def test_grant_then_deny_with_retry_after(limiter: Limiter) -> None:
    first = limiter.reserve(reservation_id="r1", demands=[rate("model:m", 60, 60)])
    assert first.granted
    assert first.retry_after is None
    denied = limiter.reserve(reservation_id="r2", demands=[rate("model:m", 60, 1)])
    assert not denied.granted
    assert denied.reason == "rate_limited"
    assert denied.bucket == "model:m:requests"
    # 60/min refills one per second; a little already refilled since the first reserve.
    assert denied.retry_after is not None
    assert 0 < denied.retry_after <= 1.0


def test_retry_after_is_never_zero(limiter: Limiter) -> None:
    limiter.reserve(reservation_id="r1", demands=[rate("b", 6_000_000, 6_000_000)])
    denied = limiter.reserve(reservation_id="r2", demands=[rate("b", 6_000_000, 6_000_000)])
    assert not denied.granted
    assert denied.retry_after is not None
    assert denied.retry_after > 0


def test_fresh_bucket_is_full_and_refills(limiter: Limiter) -> None:
    demand = rate("b", 6000, 6000)  # 100 per second
    assert level(limiter, demand) == pytest.approx(6000)
    assert limiter.reserve(reservation_id="r1", demands=[demand]).granted
    assert level(limiter, demand) < 100
    time.sleep(0.3)
    assert 20 <= level(limiter, demand) <= 100


def test_all_or_nothing(limiter: Limiter) -> None:
    a, b = rate("model:a", 100, 50), rate("model:b", 10, 5)
    assert limiter.reserve(reservation_id="fill-b", demands=[rate("model:b", 10, 10)]).granted
    denied = limiter.reserve(reservation_id="both", demands=[a, b])
    assert not denied.granted
    assert denied.bucket == "model:b:requests"
    # Bucket a was not touched: its whole capacity is still there.
    assert level(limiter, a) == pytest.approx(100)
    assert limiter.reserve(reservation_id="all-a", demands=[rate("model:a", 100, 100)]).granted


def test_denial_reports_the_most_constrained_bucket(limiter: Limiter) -> None:
    limiter.reserve(reservation_id="f1", demands=[rate("x", 60, 60), rate("y", 600, 600)])
    denied = limiter.reserve(reservation_id="d", demands=[rate("x", 60, 30), rate("y", 600, 30)])
    assert not denied.granted
    assert denied.bucket == "x:requests"  # 30 s to refill 30 at 1/s vs 3 s at 10/s
    assert denied.retry_after == pytest.approx(30, abs=0.5)


def test_reserve_is_idempotent(limiter: Limiter) -> None:
    demand = rate("b", 60, 10)
    first = limiter.reserve(reservation_id="same", demands=[demand])
    again = limiter.reserve(reservation_id="same", demands=[rate("b", 60, 40)])
    assert first.granted
    assert not first.replayed
    assert again.granted
    assert again.replayed
    assert again.demands == (demand,)  # the original grant, not the new ask
    assert level(limiter, demand) == pytest.approx(50, abs=0.5)


def test_denied_reserve_leaves_no_record(limiter: Limiter) -> None:
    limiter.reserve(reservation_id="fill", demands=[gauge("g", 100, 100)])
    assert not limiter.reserve(reservation_id="later", demands=[gauge("g", 100, 10)]).granted
    assert limiter.release(reservation_id="fill") == "applied"
    retried = limiter.reserve(reservation_id="later", demands=[gauge("g", 100, 10)])
    assert retried.granted
    assert not retried.replayed


def test_settle_debt_delays_the_next_caller(limiter: Limiter) -> None:
    demand = rate("model:m", 60, 10, dimension="output_tokens")
    assert limiter.reserve(reservation_id="r1", demands=[demand]).granted
    assert limiter.settle(reservation_id="r1", actual={demand.key: 70}) == "applied"
    assert level(limiter, demand) == pytest.approx(-10, abs=0.5)
    denied = limiter.reserve(reservation_id="r2", demands=[rate("model:m", 60, 1, "output_tokens")])
    assert not denied.granted
    assert denied.retry_after == pytest.approx(11, abs=0.5)
    # Settling twice does nothing the second time.
    assert limiter.settle(reservation_id="r1", actual={demand.key: 1000}) == "noop"
    assert level(limiter, demand) == pytest.approx(-10, abs=0.5)


def test_settle_refunds_overestimates_up_to_capacity(limiter: Limiter) -> None:
    demand = rate("b", 60, 50)
    limiter.reserve(reservation_id="r1", demands=[demand])
    assert limiter.settle(reservation_id="r1", actual={demand.key: 20}) == "applied"
    assert level(limiter, demand) == pytest.approx(40, abs=0.5)

    small = rate("c", 60, 10)
    limiter.reserve(reservation_id="r2", demands=[small])
    limiter.settle(reservation_id="r2", actual={small.key: 0})
    assert level(limiter, small) == pytest.approx(60)  # never above capacity


def test_settle_keeps_unreported_keys_and_rejects_unknown(limiter: Limiter) -> None:
    req, out = rate("m", 60, 10), rate("m", 600, 100, dimension="output_tokens")
    limiter.reserve(reservation_id="r1", demands=[req, out])
    with pytest.raises(ValueError, match="not part of this reservation"):
        limiter.settle(reservation_id="r1", actual={"m:input_tokens": 5})
    with pytest.raises(ValueError, match=">= 0"):
        limiter.settle(reservation_id="r1", actual={out.key: -5})
    assert limiter.settle(reservation_id="r1", actual={out.key: 300}) == "applied"
    assert level(limiter, req) == pytest.approx(50, abs=0.5)
    assert level(limiter, out) == pytest.approx(300, abs=1)


def test_refund_returns_everything_once(limiter: Limiter) -> None:
    demand, hold = rate("b", 60, 30), gauge("g", 100, 40)
    limiter.reserve(reservation_id="r1", demands=[demand, hold])
    assert level(limiter, hold) == pytest.approx(40)
    assert limiter.refund(reservation_id="r1") == "applied"
    assert level(limiter, demand) == pytest.approx(60)
    assert level(limiter, hold) == 0
    assert limiter.refund(reservation_id="r1") == "noop"
    assert limiter.settle(reservation_id="r1", actual={demand.key: 60}) == "noop"
    assert limiter.release(reservation_id="r1") == "noop"
    assert level(limiter, demand) == pytest.approx(60)


def test_refund_after_settle_keeps_settled_usage(limiter: Limiter) -> None:
    demand, hold = rate("b", 60, 30), gauge("g", 100, 40)
    limiter.reserve(reservation_id="r1", demands=[demand, hold])
    limiter.settle(reservation_id="r1", actual={demand.key: 20})
    assert limiter.refund(reservation_id="r1") == "applied"
    assert level(limiter, demand) == pytest.approx(40, abs=0.5)
    assert level(limiter, hold) == 0


def test_unknown_reservation_is_missing(limiter: Limiter) -> None:
    assert limiter.settle(reservation_id="ghost", actual={}) == "missing"
    assert limiter.release(reservation_id="ghost") == "missing"
    assert limiter.refund(reservation_id="ghost") == "missing"


def test_over_capacity_rate_demand_waits_for_a_full_bucket(limiter: Limiter) -> None:
    big = rate("b", 60, 90)
    assert limiter.reserve(reservation_id="r0", demands=[rate("b", 60, 1)]).granted
    denied = limiter.reserve(reservation_id="r1", demands=[big])
    assert not denied.granted
    assert denied.retry_after is not None
    assert denied.retry_after == pytest.approx(1, abs=0.1)  # time until full, not forever
    time.sleep(denied.retry_after + 0.05)
    assert limiter.reserve(reservation_id="r1", demands=[big]).granted
    assert level(limiter, big) == pytest.approx(-30, abs=0.5)  # runs alone, leaves debt
    again = limiter.reserve(reservation_id="r2", demands=[big])
    assert again.retry_after == pytest.approx(90, abs=0.5)


# --- gauges --------------------------------------------------------------------------------------


def test_gauge_hold_and_release(limiter: Limiter) -> None:
    assert limiter.reserve(reservation_id="b1", demands=[gauge("model:m", 100, 60)]).granted
    denied = limiter.reserve(
        reservation_id="b2", demands=[gauge("model:m", 100, 50)], retry_seconds=20
    )
    assert not denied.granted
    assert denied.reason == "gauge_full"
    assert denied.retry_after == 20
    time.sleep(0.2)  # gauges do not refill on a clock
    assert not limiter.reserve(reservation_id="b2", demands=[gauge("model:m", 100, 50)]).granted
    assert limiter.release(reservation_id="b1") == "applied"
    assert limiter.release(reservation_id="b1") == "noop"
    assert limiter.reserve(reservation_id="b2", demands=[gauge("model:m", 100, 50)]).granted
    assert level(limiter, gauge("model:m", 100, 0)) == pytest.approx(50)


def test_gauge_holds_expire(limiter: Limiter) -> None:
    hold = gauge("g", 100, 100)
    assert limiter.reserve(reservation_id="lost", demands=[hold], hold_seconds=0.3).granted
    assert not limiter.reserve(reservation_id="next", demands=[hold]).granted
    time.sleep(0.4)
    assert level(limiter, hold) == 0
    assert limiter.reserve(reservation_id="next", demands=[hold]).granted


def test_over_capacity_gauge_runs_alone(limiter: Limiter) -> None:
    assert limiter.reserve(reservation_id="small", demands=[gauge("g", 100, 1)]).granted
    assert not limiter.reserve(reservation_id="huge", demands=[gauge("g", 100, 150)]).granted
    limiter.release(reservation_id="small")
    assert limiter.reserve(reservation_id="huge", demands=[gauge("g", 100, 150)]).granted
    assert not limiter.reserve(reservation_id="tiny", demands=[gauge("g", 100, 1)]).granted


# --- budgets ---------------------------------------------------------------------------------------


def test_budget_never_refills(limiter: Limiter) -> None:
    assert limiter.reserve(reservation_id="a", demands=[budget("run:1", 100, 60)]).granted
    denied = limiter.reserve(reservation_id="b", demands=[budget("run:1", 100, 50)])
    assert not denied.granted
    assert denied.reason == "budget_exhausted"
    assert denied.retry_after == 30  # the default fixed retry
    assert limiter.reserve(reservation_id="c", demands=[budget("run:1", 100, 40)]).granted
    assert level(limiter, budget("run:1", 100, 0)) == pytest.approx(100)
    # Settling a smaller actual gives the difference back.
    assert limiter.settle(reservation_id="a", actual={"run:1:token_budget": 30}) == "applied"
    assert limiter.reserve(reservation_id="b", demands=[budget("run:1", 100, 30)]).granted
    assert not limiter.reserve(reservation_id="d", demands=[budget("run:1", 100, 1)]).granted


def test_budget_larger_than_capacity_never_fits(limiter: Limiter) -> None:
    other = rate("b", 60, 10)
    denied = limiter.reserve(reservation_id="x", demands=[other, budget("run:1", 100, 150)])
    assert not denied.granted
    assert denied.retry_after is None
    assert denied.reason == "exceeds_capacity"
    assert denied.bucket == "run:1:token_budget"
    assert level(limiter, other) == pytest.approx(60)


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: rate("b", 0, 1),
        lambda: rate("b", 60, -1),
        lambda: rate("b", float("inf"), 1),
        lambda: rate("has space", 60, 1),
        lambda: Demand(bucket="b", dimension="d", kind="leaky", limit=1, amount=1),  # type: ignore[arg-type]
    ],
)
def test_bad_demands_are_refused(make: Callable[[], Demand]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        make()


def test_duplicate_keys_are_refused(limiter: Limiter) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        limiter.reserve(reservation_id="r", demands=[rate("b", 60, 1), rate("b", 60, 2)])
    with pytest.raises(ValueError, match="reservation_id"):
        limiter.reserve(reservation_id="", demands=[rate("b", 60, 1)])


# --- concurrency ---------------------------------------------------------------------------------


def _hammer(
    limiter: Limiter, seconds: float, threads: int, demand: Demand
) -> tuple[int, int, float]:
    """Run ``threads`` threads reserving ``demand`` in a loop; (granted, attempts, elapsed).

    ``elapsed`` runs from before the first reservation to after the last, so it bounds the
    refill that could legitimately have been handed out.
    """
    granted = [0] * threads
    attempts = [0] * threads
    start_barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            start_barrier.wait()
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                n += 1
                attempts[index] += 1
                if limiter.reserve(reservation_id=f"t{index}-{n}", demands=[demand]).granted:
                    granted[index] += 1
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    started = time.monotonic()
    start_barrier.wait()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    assert not errors, errors
    return sum(granted), sum(attempts), elapsed


@pytest.mark.parametrize("backend", ["redis", "db"])
def test_concurrent_reservations_never_exceed_capacity_plus_refill(
    transactional_db: None, redis_limiter: RedisLimiter, backend: str
) -> None:
    """8 threads on one 600 rpm bucket: admissions <= capacity + 10/s * elapsed.

    A first burst takes the whole capacity (600), so that even a slow backend on a loaded
    machine is contended for the whole run; then the threads may only share the refill.
    """
    limiter: Limiter = redis_limiter if backend == "redis" else DatabaseLimiter()
    demand = rate("model:hot", 600, 1)  # capacity 600, refill 10 per second
    started = time.monotonic()
    burst = limiter.reserve(reservation_id="burst", demands=[rate("model:hot", 600, 600)])
    assert burst.granted
    admitted, attempts, hammer_elapsed = _hammer(limiter, seconds=4.0, threads=8, demand=demand)
    elapsed = time.monotonic() - started
    total = 600 + admitted
    ceiling = 600 + 10 * elapsed
    print(
        f"{backend}: {attempts} attempts, {admitted} admitted after the 600 burst in "
        f"{elapsed:.2f}s; total {total} <= ceiling {ceiling:.1f}"
    )
    assert total <= ceiling
    # Contended (the bucket refused most attempts) and not refusing everything: the threads
    # got most of the refill.
    assert attempts >= 3 * admitted
    assert admitted >= 10 * (hammer_elapsed - 1.5)


@pytest.mark.parametrize("backend", ["redis", "db"])
def test_concurrent_duplicate_reserve_takes_once(
    transactional_db: None, redis_limiter: RedisLimiter, backend: str
) -> None:
    limiter: Limiter = redis_limiter if backend == "redis" else DatabaseLimiter()
    demand = rate("model:dup", 60, 10)
    results = []
    barrier = threading.Barrier(8)

    def work() -> None:
        try:
            barrier.wait()
            results.append(limiter.reserve(reservation_id="same-id", demands=[demand]))
        finally:
            connections.close_all()

    workers = [threading.Thread(target=work) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == 8
    assert all(r.granted for r in results)
    assert sum(not r.replayed for r in results) == 1
    assert level(limiter, demand) == pytest.approx(50, abs=0.5)


# --- Redis specifics -----------------------------------------------------------------------------


def test_redis_key_layout_and_ttls(redis_limiter: RedisLimiter) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    redis_limiter.reserve(reservation_id="r1", demands=[rate("model:gpt-4.1", 60, 6)])
    bucket = client.hgetall("jg:lim:model:gpt-4.1:requests")
    assert set(bucket) == {"tokens", "ts"}
    assert float(bucket["tokens"]) == pytest.approx(54, abs=0.1)
    assert 0 < client.pttl("jg:lim:model:gpt-4.1:requests") <= 6_000 + 60_000
    assert 86_000 < client.ttl("jg:res:r1") <= 86_400

    redis_limiter.reserve(reservation_id="r2", demands=[gauge("model:gpt-4.1", 100, 5)])
    assert client.ttl("jg:res:r2") > 26 * 3600  # outlives its gauge hold
    assert set(client.hgetall("jg:lim:model:gpt-4.1:batch_enqueued_tokens")) == {"h:r2", "e:r2"}

    redis_limiter.reserve(reservation_id="r3", demands=[budget("run:7", 100, 5)])
    assert client.ttl("jg:lim:run:7:token_budget") == -1  # budgets never expire
    client.close()


def test_redis_reloads_flushed_scripts(redis_limiter: RedisLimiter) -> None:
    assert redis_limiter.reserve(reservation_id="r1", demands=[rate("b", 60, 1)]).granted
    redis.Redis.from_url(REDIS_URL).script_flush()
    assert redis_limiter.reserve(reservation_id="r2", demands=[rate("b", 60, 1)]).granted
    assert redis_limiter.settle(reservation_id="r2", actual={"b:requests": 2}) == "applied"


def test_redis_down_raises_limiter_unavailable(closed_port: int) -> None:
    limiter = RedisLimiter(url=f"redis://127.0.0.1:{closed_port}/13")
    started = time.monotonic()
    with pytest.raises(LimiterUnavailable, match="unavailable"):
        limiter.reserve(reservation_id="r1", demands=[rate("b", 60, 1)])
    with pytest.raises(LimiterUnavailable):
        limiter.settle(reservation_id="r1", actual={})
    with pytest.raises(LimiterUnavailable):
        limiter.release(reservation_id="r1")
    assert time.monotonic() - started < 10  # fails fast enough for a tick


def test_get_limiter_picks_the_backend(db: None) -> None:
    with override_settings(JUDGE_REDIS_URL=REDIS_URL):
        assert isinstance(get_limiter(), RedisLimiter)
        assert get_limiter() is get_limiter()
    with override_settings(JUDGE_REDIS_URL=None):
        assert isinstance(get_limiter(), DatabaseLimiter)


# --- policies to demands -------------------------------------------------------------------------


def test_policy_demands_use_owning_buckets(limiter: Limiter, no_policies: None) -> None:
    Policy.objects.create(scope="global", key="default", requests_per_minute=1000, token_budget=10)
    Policy.objects.create(scope="model", key="gpt-4.1", requests_per_minute=2)
    Policy.objects.create(scope="experiment", key="solo", input_tokens_per_minute=600)
    a = policy_resolve(team=None, provider="openai", model="gpt-4.1", experiment="a")
    b = policy_resolve(team=None, provider="openai", model="gpt-4.1", experiment="solo")
    demands_a = policy_demands(policy=a, requests=1, input_tokens=100)
    demands_b = policy_demands(policy=b, requests=1, input_tokens=100, budget_tokens=5)
    assert [d.key for d in demands_a] == ["model:gpt-4.1:requests"]
    assert [d.key for d in demands_b] == [
        "model:gpt-4.1:requests",
        "experiment:solo:input_tokens",
        "global:token_budget",
    ]
    # Both experiments share the model-scope RPM bucket (limit 2): the third call waits.
    assert limiter.reserve(reservation_id="a1", demands=demands_a).granted
    assert limiter.reserve(reservation_id="b1", demands=demands_b).granted
    assert not limiter.reserve(reservation_id="a2", demands=demands_a).granted
    run_budget = policy_demands(policy=b, budget_tokens=5, budget_owner="run:9")
    assert [d.key for d in run_budget] == ["run:9:token_budget"]
