"""Rate limiter with atomic, idempotent multi-bucket reservations (reserve -> settle).

Why reserve-then-settle: the original engine charged tokens *after* each call, so a burst of
workers could overshoot a provider limit before any charge landed (DOMAIN.md section 4). Here
a caller reserves its *estimate* on every bucket that applies (all or nothing), makes the call,
then settles the observed usage; the difference is refunded, or carried as debt that delays
the next admission.

Bucket kinds
------------
``rate``
    Token bucket: capacity ``limit`` (per minute), refills ``limit / 60`` per second. Used for
    requests, input tokens and output tokens per minute. A missing bucket is full.
``gauge``
    Held capacity without refill, e.g. input tokens inside unfinished provider batches. Each
    grant is a *hold* released by :meth:`Limiter.release` when the batch finishes. Holds also
    expire after ``hold_seconds`` (default 26 h, past the providers' 24 h batch window) so a
    lost release cannot pin a gauge forever.
``budget``
    Never refills: token budgets, and dollar budgets counted in integer micro-dollars.

Over-capacity demands (an amount larger than the bucket's whole ``limit``)
-------------------------------------------------------------------------
* rate: granted only when the bucket is **full**, leaving it in debt (negative), so the
  oversized call runs alone and later callers wait for the debt to refill. Denials report the
  time until the bucket is full. It never waits forever.
* gauge: granted only when the gauge is **empty** (the oversized batch runs alone).
* budget: **denied** with ``retry_after=None`` and ``reason="exceeds_capacity"``: it can
  never fit, and spending past a money cap is not an acceptable way out.

Idempotency
-----------
Every operation is keyed by ``reservation_id``. A repeated ``reserve`` returns the original
grant (``replayed=True``) without taking anything; ``settle``, ``release`` and ``refund`` apply
once and answer ``"noop"`` afterwards. Records of granted reservations live for 24 h (longer
when they hold a gauge). A *denied* reserve leaves no record, so the caller may retry with the
same id. This also makes client-side retries after a network timeout safe.

Backends
--------
:class:`RedisLimiter` (``settings.JUDGE_REDIS_URL`` set): one Lua script per operation, run
with EVALSHA (loaded on ``NOSCRIPT``), time from Redis ``TIME`` so client clocks never matter.
Key layout::

    jg:lim:<bucket>:<dimension>   hash  rate:   tokens, ts (epoch s; bucket expires once full)
                                        gauge:  h:<reservation_id> amount, e:<reservation_id> expiry
                                        budget: used (no TTL)
    jg:res:<reservation_id>       hash  demands (JSON), granted_at, settled, released, refunded

If Redis is unreachable every call raises :class:`LimiterUnavailable` (callers defer the work);
the limiter never fails open. A ``FLUSHALL`` (or losing an un-persisted Redis) resets every
bucket to full and every budget to unspent; that is harmless for per-minute limits but means
budgets **must also be checked against the database** (recorded usage) by their callers.

:class:`DatabaseLimiter` (embedded default, SQLite with several processes, or Postgres):
``LimiterBucket`` / ``LimiterReservation`` / ``LimiterHold`` rows, one transaction per
operation, bucket rows locked with ``SELECT ... FOR UPDATE`` in key order.

Call the limiter outside any database transaction (ARCHITECTURE.md section 3, rule 6): the
database backend would otherwise hold bucket locks until the caller commits.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal, cast

import redis
from django.conf import settings
from django.db import IntegrityError, OperationalError, connections, transaction
from django.db.models import Sum
from django.utils import timezone
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from policies.models import LimiterBucket, LimiterHold, LimiterReservation
from policies.resolver import EffectivePolicy

__all__ = [
    "DEFAULT_RETRY_SECONDS",
    "GAUGE_HOLD_SECONDS",
    "RESERVATION_TTL_SECONDS",
    "DatabaseLimiter",
    "Demand",
    "DemandKind",
    "DenialReason",
    "Dimension",
    "Limiter",
    "LimiterError",
    "LimiterUnavailable",
    "Outcome",
    "RedisLimiter",
    "Reservation",
    "get_limiter",
    "policy_demands",
]

DemandKind = Literal["rate", "gauge", "budget"]
DenialReason = Literal["rate_limited", "gauge_full", "budget_exhausted", "exceeds_capacity"]
#: ``applied`` this call changed state; ``noop`` it had already been done (or the reservation
#: was refunded); ``missing`` no such granted reservation (never granted, or its record expired).
Outcome = Literal["applied", "noop", "missing"]

RESERVATION_TTL_SECONDS = 24 * 3600
GAUGE_HOLD_SECONDS = 26 * 3600
DEFAULT_RETRY_SECONDS = 30.0
#: A rate denial always says "wait a little": 0 would invite a hot retry loop.
MIN_RATE_RETRY_SECONDS = 0.001

_KINDS: frozenset[str] = frozenset({"rate", "gauge", "budget"})
_NAME_RE = re.compile(r"^[^\s{}]{1,200}$")


class Dimension(StrEnum):
    """Conventional dimension names (any non-blank string works)."""

    REQUESTS = "requests"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    BATCH_ENQUEUED_TOKENS = "batch_enqueued_tokens"
    TOKEN_BUDGET = "token_budget"  # noqa: S105 (a dimension name, not a secret)
    DOLLAR_BUDGET_MICRO = "dollar_budget_micro"


class LimiterError(Exception):
    """Base class of limiter failures."""


class LimiterUnavailable(LimiterError):
    """The limiter's store (Redis or the database) cannot be reached: defer, never proceed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Demand:
    """Take ``amount`` from bucket ``<bucket>:<dimension>`` whose capacity is ``limit``.

    ``bucket`` is the owner from :meth:`EffectivePolicy.bucket_owner` (``model:gpt-4.1``);
    ``limit`` comes from the policy at reservation time, so editing a policy takes effect on
    the next reservation without resetting the bucket.
    """

    bucket: str
    dimension: str
    kind: DemandKind
    limit: float
    amount: float

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.bucket):
            raise ValueError(f"Demand.bucket {self.bucket!r}: 1-200 chars, no spaces or braces.")
        if not _NAME_RE.match(self.dimension):
            raise ValueError(f"Demand.dimension {self.dimension!r}: 1-200 chars, no spaces.")
        if self.kind not in _KINDS:
            raise ValueError(f"Demand.kind {self.kind!r}: use rate, gauge or budget.")
        if not (math.isfinite(self.limit) and self.limit > 0):
            raise ValueError(f"Demand.limit for {self.key} must be a positive number.")
        if not (math.isfinite(self.amount) and self.amount >= 0):
            raise ValueError(f"Demand.amount for {self.key} must be a number >= 0.")

    @property
    def key(self) -> str:
        """``<bucket>:<dimension>``; the name used in ``settle(actual=...)``."""
        return f"{self.bucket}:{self.dimension}"

    def to_wire(self) -> list[Any]:
        return [self.kind, float(self.limit), float(self.amount), self.bucket, self.dimension]

    @classmethod
    def from_wire(cls, raw: Sequence[Any]) -> Demand:
        kind, limit, amount, bucket, dimension = raw
        return cls(
            bucket=str(bucket),
            dimension=str(dimension),
            kind=cast("DemandKind", kind),
            limit=float(limit),
            amount=float(amount),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """The answer to :meth:`Limiter.reserve`.

    Granted: ``demands`` is what was taken (the *original* demands on a replay). Denied:
    nothing was taken; ``retry_after`` is the seconds until the most constrained bucket
    could admit (``None`` when it never can), ``bucket`` names that bucket.
    """

    reservation_id: str
    granted: bool
    demands: tuple[Demand, ...] = ()
    retry_after: float | None = None
    reason: DenialReason | None = None
    bucket: str | None = None
    replayed: bool = False


def _eps(limit: float) -> float:
    # Float refill arithmetic must not deny a request that fits "exactly".
    return 1e-9 * max(1.0, limit)


def _validate_reserve(
    reservation_id: str, demands: Iterable[Demand], retry_seconds: float, hold_seconds: float
) -> tuple[Demand, ...]:
    if not _NAME_RE.match(reservation_id):
        raise ValueError(f"reservation_id {reservation_id!r}: 1-200 chars, no spaces or braces.")
    result = tuple(demands)
    keys = [d.key for d in result]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate bucket keys in one reservation: {sorted(keys)}; merge them.")
    if not (math.isfinite(retry_seconds) and retry_seconds > 0):
        raise ValueError("retry_seconds must be a positive number.")
    if not (math.isfinite(hold_seconds) and hold_seconds > 0):
        raise ValueError("hold_seconds must be a positive number.")
    return result


def _validate_actual(demands: Sequence[Demand], actual: Mapping[str, float]) -> dict[str, float]:
    """Actual usage per demand key; gauge keys are ignored (gauges are released, not settled)."""
    known = {d.key: d for d in demands}
    unknown = sorted(set(actual) - set(known))
    if unknown:
        raise ValueError(f"settle: keys {unknown} are not part of this reservation {sorted(known)}")
    clean: dict[str, float] = {}
    for key, value in actual.items():
        number = float(value)
        if not (math.isfinite(number) and number >= 0):
            raise ValueError(f"settle: actual[{key!r}]={value!r} must be a number >= 0.")
        if known[key].kind != "gauge":
            clean[key] = number
    return clean


def _record_ttl(demands: Sequence[Demand], hold_seconds: float) -> int:
    # A record must outlive its gauge holds, or release() could not find them.
    if any(d.kind == "gauge" for d in demands):
        return max(RESERVATION_TTL_SECONDS, math.ceil(hold_seconds) + 3600)
    return RESERVATION_TTL_SECONDS


class Limiter(ABC):
    """The limiter interface; obtain one with :func:`get_limiter`."""

    @abstractmethod
    def reserve(
        self,
        *,
        reservation_id: str,
        demands: Sequence[Demand],
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        hold_seconds: float = GAUGE_HOLD_SECONDS,
    ) -> Reservation:
        """Take every demand or none; see the module docstring for the semantics.

        ``retry_seconds`` is the ``retry_after`` reported for gauge and budget denials (they
        do not refill on a clock; pass the poll interval). ``hold_seconds`` bounds gauge holds.
        """

    @abstractmethod
    def settle(self, *, reservation_id: str, actual: Mapping[str, float]) -> Outcome:
        """Apply ``actual - reserved`` to rate buckets and budgets (debt or refund), once.

        ``actual`` maps demand keys (``Demand.key``) to observed amounts; keys left out keep
        their reservation. Rate buckets never refill above capacity; budgets never go below 0.
        """

    @abstractmethod
    def release(self, *, reservation_id: str) -> Outcome:
        """Return the reservation's gauge holds (its batch finished), once."""

    @abstractmethod
    def refund(self, *, reservation_id: str) -> Outcome:
        """Undo the reservation (the call never reached the provider), once.

        Rate and budget amounts come back unless already settled (settled usage is final);
        gauge holds are released unless already released.
        """

    @abstractmethod
    def level(self, *, bucket: str, dimension: str, kind: DemandKind, limit: float) -> float:
        """Current state: available tokens (rate), held amount (gauge), spent (budget)."""

    @abstractmethod
    def purge_expired(self) -> int:
        """Delete expired reservation records and holds; returns rows/keys removed."""


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------

_LUA_PRELUDE = """
local function now_seconds()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.17g', x) end
local function eps(limit) return 1e-9 * math.max(1, limit) end
-- Tokens available at `now`. A missing bucket is full: idle buckets expire once refilled.
local function rate_level(key, limit, now)
  local h = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(h[1]), tonumber(h[2])
  if tokens == nil or ts == nil then return limit end
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end  -- TIME can step back after a failover
  return math.min(limit, tokens + elapsed * limit / 60)
end
local function rate_store(key, limit, tokens, now)
  redis.call('HSET', key, 'tokens', fmt(tokens), 'ts', fmt(now))
  -- Once refilled the key is equivalent to a missing one, so let it go then (plus slack).
  local ms = math.ceil((limit - tokens) * 60000 / limit) + 60000
  redis.call('PEXPIRE', key, ms)
end
-- Live total of a gauge; drops holds past their expiry (a lost release self-heals).
local function gauge_level(key, now)
  local flat = redis.call('HGETALL', key)
  local amounts, expiries = {}, {}
  for i = 1, #flat, 2 do
    local prefix, id = string.sub(flat[i], 1, 2), string.sub(flat[i], 3)
    if prefix == 'h:' then amounts[id] = tonumber(flat[i + 1])
    elseif prefix == 'e:' then expiries[id] = tonumber(flat[i + 1]) end
  end
  local held = 0
  for id, amount in pairs(amounts) do
    local expiry = expiries[id]
    if expiry ~= nil and expiry <= now then
      redis.call('HDEL', key, 'h:' .. id, 'e:' .. id)
    else
      held = held + amount
    end
  end
  return held
end
"""

# KEYS[1] reservation record; KEYS[1 + i] bucket of demand i.
# ARGV: demands JSON [[kind, limit, amount, bucket, dimension], ...], reservation id,
#       record TTL (s), gauge hold TTL (s), retry_after for gauge/budget denials (s).
_LUA_RESERVE = (
    _LUA_PRELUDE
    + """
local rec = KEYS[1]
if redis.call('EXISTS', rec) == 1 then
  return {'replay', redis.call('HGET', rec, 'demands')}
end
local demands = cjson.decode(ARGV[1])
local rid = ARGV[2]
local rec_ttl = tonumber(ARGV[3])
local hold_ttl = tonumber(ARGV[4])
local fixed_retry = tonumber(ARGV[5])
local now = now_seconds()

-- Phase 1: evaluate every bucket; write nothing (a denial must take nothing).
local levels = {}
local worst_wait, worst_reason, worst_bucket = -1, '', ''
local never_bucket = nil
for i, d in ipairs(demands) do
  local kind, limit, amount = d[1], tonumber(d[2]), tonumber(d[3])
  local key, label = KEYS[i + 1], d[4] .. ':' .. d[5]
  local wait, reason = nil, nil
  if kind == 'rate' then
    local tokens = rate_level(key, limit, now)
    levels[i] = tokens
    local need = math.min(amount, limit)  -- over-capacity: admit when full, leave debt
    if amount > 0 and tokens + eps(limit) < need then
      wait = math.max((need - tokens) * 60 / limit, __MIN_WAIT__)
      reason = 'rate_limited'
    end
  elseif kind == 'gauge' then
    local held = gauge_level(key, now)
    if amount > 0 then
      if amount > limit then
        if held > eps(limit) then wait, reason = fixed_retry, 'gauge_full' end
      elseif held + amount > limit + eps(limit) then
        wait, reason = fixed_retry, 'gauge_full'
      end
    end
  else
    local used = tonumber(redis.call('HGET', key, 'used')) or 0
    levels[i] = used
    if amount > 0 then
      if amount > limit + eps(limit) then
        never_bucket = never_bucket or label
      elseif used + amount > limit + eps(limit) then
        wait, reason = fixed_retry, 'budget_exhausted'
      end
    end
  end
  if wait ~= nil and wait > worst_wait then
    worst_wait, worst_reason, worst_bucket = wait, reason, label
  end
end
if never_bucket then return {'denied', '', 'exceeds_capacity', never_bucket} end
if worst_wait >= 0 then return {'denied', fmt(worst_wait), worst_reason, worst_bucket} end

-- Phase 2: take everything.
for i, d in ipairs(demands) do
  local kind, limit, amount = d[1], tonumber(d[2]), tonumber(d[3])
  local key = KEYS[i + 1]
  if kind == 'rate' then
    rate_store(key, limit, levels[i] - amount, now)
  elseif kind == 'gauge' then
    if amount > 0 then
      redis.call('HSET', key, 'h:' .. rid, fmt(amount), 'e:' .. rid, fmt(now + hold_ttl))
      redis.call('EXPIRE', key, math.ceil(hold_ttl) + 3600)
    end
  else
    redis.call('HSET', key, 'used', fmt(levels[i] + amount))
  end
end
redis.call('HSET', rec, 'demands', ARGV[1], 'granted_at', fmt(now),
           'settled', '0', 'released', '0', 'refunded', '0')
redis.call('EXPIRE', rec, rec_ttl)
return {'granted'}
"""
).replace("__MIN_WAIT__", repr(MIN_RATE_RETRY_SECONDS))

# KEYS[1] record; KEYS[1 + i] bucket of recorded demand i. ARGV[1]: JSON actuals aligned with
# the recorded demands, -1 meaning "not reported, keep the reservation".
_LUA_SETTLE = (
    _LUA_PRELUDE
    + """
local rec = KEYS[1]
local st = redis.call('HMGET', rec, 'demands', 'settled', 'refunded')
if not st[1] then return 'missing' end
if st[2] == '1' or st[3] == '1' then return 'noop' end
local demands = cjson.decode(st[1])
if #demands + 1 ~= #KEYS then return redis.error_reply('settle: key count mismatch') end
local actuals = cjson.decode(ARGV[1])
local now = now_seconds()
for i, d in ipairs(demands) do
  local actual = tonumber(actuals[i])
  if actual ~= nil and actual >= 0 then
    local kind, limit, reserved = d[1], tonumber(d[2]), tonumber(d[3])
    local key, delta = KEYS[i + 1], actual - tonumber(d[3])
    if kind == 'rate' then
      rate_store(key, limit, math.min(limit, rate_level(key, limit, now) - delta), now)
    elseif kind == 'budget' then
      local used = (tonumber(redis.call('HGET', key, 'used')) or 0) + delta
      redis.call('HSET', key, 'used', fmt(math.max(0, used)))
    end
  end
end
redis.call('HSET', rec, 'settled', '1')
return 'applied'
"""
)

# KEYS as for settle; ARGV[1] reservation id.
_LUA_RELEASE = """
local rec = KEYS[1]
local st = redis.call('HMGET', rec, 'demands', 'released')
if not st[1] then return 'missing' end
if st[2] == '1' then return 'noop' end
local demands = cjson.decode(st[1])
if #demands + 1 ~= #KEYS then return redis.error_reply('release: key count mismatch') end
for i, d in ipairs(demands) do
  if d[1] == 'gauge' then redis.call('HDEL', KEYS[i + 1], 'h:' .. ARGV[1], 'e:' .. ARGV[1]) end
end
redis.call('HSET', rec, 'released', '1')
return 'applied'
"""

# KEYS as for settle; ARGV[1] reservation id.
_LUA_REFUND = (
    _LUA_PRELUDE
    + """
local rec = KEYS[1]
local st = redis.call('HMGET', rec, 'demands', 'settled', 'released', 'refunded')
if not st[1] then return 'missing' end
if st[4] == '1' then return 'noop' end
local demands = cjson.decode(st[1])
if #demands + 1 ~= #KEYS then return redis.error_reply('refund: key count mismatch') end
local now = now_seconds()
for i, d in ipairs(demands) do
  local kind, limit, amount, key = d[1], tonumber(d[2]), tonumber(d[3]), KEYS[i + 1]
  if kind == 'rate' and st[2] ~= '1' then
    rate_store(key, limit, math.min(limit, rate_level(key, limit, now) + amount), now)
  elseif kind == 'budget' and st[2] ~= '1' then
    local used = (tonumber(redis.call('HGET', key, 'used')) or 0) - amount
    redis.call('HSET', key, 'used', fmt(math.max(0, used)))
  elseif kind == 'gauge' and st[3] ~= '1' then
    redis.call('HDEL', key, 'h:' .. ARGV[1], 'e:' .. ARGV[1])
  end
end
redis.call('HSET', rec, 'refunded', '1', 'released', '1')
return 'applied'
"""
)

# KEYS[1] bucket; ARGV: kind, limit.
_LUA_LEVEL = (
    _LUA_PRELUDE
    + """
local now = now_seconds()
if ARGV[1] == 'rate' then return fmt(rate_level(KEYS[1], tonumber(ARGV[2]), now)) end
if ARGV[1] == 'gauge' then return fmt(gauge_level(KEYS[1], now)) end
return fmt(tonumber(redis.call('HGET', KEYS[1], 'used')) or 0)
"""
)

_POOLS: dict[str, redis.ConnectionPool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(url: str) -> redis.ConnectionPool:
    """One connection pool per process and URL (redis-py resets a pool inherited by fork)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(url)
        if pool is None:
            pool = redis.ConnectionPool.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=5.0,
                health_check_interval=30,
                # Ride out a blip (failover, restart) briefly, then fail loudly; replaying a
                # script is safe because every operation is idempotent per reservation id.
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            )
            _POOLS[url] = pool
        return pool


# A timed-out script may or may not have run; retrying is safe because every operation is
# idempotent per reservation id. Anything else (script errors) is a bug and propagates.
_REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
)


class RedisLimiter(Limiter):
    """Limiter on Redis; state shared by every process pointed at the same server."""

    def __init__(self, *, url: str, prefix: str = "jg") -> None:
        self._url = url
        self._prefix = prefix
        # The pool sets decode_responses=True, which the stubs cannot see through a pool.
        self._client = redis.Redis(connection_pool=_pool(url))
        self._reserve = self._client.register_script(_LUA_RESERVE)
        self._settle = self._client.register_script(_LUA_SETTLE)
        self._release = self._client.register_script(_LUA_RELEASE)
        self._refund = self._client.register_script(_LUA_REFUND)
        self._level = self._client.register_script(_LUA_LEVEL)

    def bucket_key(self, demand_key: str) -> str:
        return f"{self._prefix}:lim:{demand_key}"

    def record_key(self, reservation_id: str) -> str:
        return f"{self._prefix}:res:{reservation_id}"

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys=keys, args=args)
        except _REDIS_DOWN as exc:
            raise LimiterUnavailable(
                f"Redis limiter at {_redacted(self._url)} is unavailable: {exc}"
            ) from exc

    def _recorded(self, reservation_id: str) -> tuple[Demand, ...] | None:
        try:
            raw = self._client.hget(self.record_key(reservation_id), "demands")
        except _REDIS_DOWN as exc:
            raise LimiterUnavailable(
                f"Redis limiter at {_redacted(self._url)} is unavailable: {exc}"
            ) from exc
        if raw is None:
            return None
        return tuple(Demand.from_wire(item) for item in json.loads(raw))

    def reserve(
        self,
        *,
        reservation_id: str,
        demands: Sequence[Demand],
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        hold_seconds: float = GAUGE_HOLD_SECONDS,
    ) -> Reservation:
        taken = _validate_reserve(reservation_id, demands, retry_seconds, hold_seconds)
        wire = json.dumps([d.to_wire() for d in taken])
        result = self._run(
            self._reserve,
            [self.record_key(reservation_id), *(self.bucket_key(d.key) for d in taken)],
            [wire, reservation_id, _record_ttl(taken, hold_seconds), hold_seconds, retry_seconds],
        )
        status = result[0]
        if status == "granted":
            return Reservation(reservation_id=reservation_id, granted=True, demands=taken)
        if status == "replay":
            original = tuple(Demand.from_wire(item) for item in json.loads(result[1]))
            return Reservation(
                reservation_id=reservation_id, granted=True, demands=original, replayed=True
            )
        retry = float(result[1]) if result[1] else None
        return Reservation(
            reservation_id=reservation_id,
            granted=False,
            retry_after=retry,
            reason=cast("DenialReason", result[2]),
            bucket=result[3],
        )

    def _keys_for(self, reservation_id: str, demands: Sequence[Demand]) -> list[str]:
        return [self.record_key(reservation_id), *(self.bucket_key(d.key) for d in demands)]

    def settle(self, *, reservation_id: str, actual: Mapping[str, float]) -> Outcome:
        # Two steps: read the (immutable) demand list to name every key the script touches,
        # then let the script re-check the record's state atomically.
        demands = self._recorded(reservation_id)
        if demands is None:
            return "missing"
        clean = _validate_actual(demands, actual)
        actuals = [clean.get(d.key, -1.0) for d in demands]
        return cast(
            "Outcome",
            self._run(self._settle, self._keys_for(reservation_id, demands), [json.dumps(actuals)]),
        )

    def release(self, *, reservation_id: str) -> Outcome:
        demands = self._recorded(reservation_id)
        if demands is None:
            return "missing"
        return cast(
            "Outcome",
            self._run(self._release, self._keys_for(reservation_id, demands), [reservation_id]),
        )

    def refund(self, *, reservation_id: str) -> Outcome:
        demands = self._recorded(reservation_id)
        if demands is None:
            return "missing"
        return cast(
            "Outcome",
            self._run(self._refund, self._keys_for(reservation_id, demands), [reservation_id]),
        )

    def level(self, *, bucket: str, dimension: str, kind: DemandKind, limit: float) -> float:
        probe = Demand(bucket=bucket, dimension=dimension, kind=kind, limit=limit, amount=0)
        return float(self._run(self._level, [self.bucket_key(probe.key)], [kind, limit]))

    def purge_expired(self) -> int:
        """Nothing to do: Redis expires records, idle rate buckets and gauge keys by TTL."""
        return 0


def _redacted(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


# ---------------------------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Denial:
    wait: float
    reason: DenialReason
    bucket: str


class DatabaseLimiter(Limiter):
    """Limiter on the Django database, for the embedded default (no Redis).

    Lock ordering: an operation locks its reservation row first (settle/release/refund only),
    then its bucket rows in ascending key order. ``reserve`` never locks an *existing*
    reservation row (it only inserts its own), so no two operations can wait on each other in
    a cycle. On SQLite ``select_for_update`` is a no-op, but the project opens every
    transaction with ``BEGIN IMMEDIATE`` (settings), which serializes writers across processes.
    """

    #: Purge expired records on roughly one reserve in this many (cheap indexed deletes).
    PURGE_EVERY = 200

    def __init__(self, *, using: str = "default") -> None:
        self._using = using

    def _now(self) -> float:
        """Epoch seconds from the database clock when it is shared (Postgres).

        ``clock_timestamp()``, not ``now()``: ``now()`` is the transaction's start, which
        predates the wait for the bucket locks, so a refill computed from it would lag behind
        the previous holder's timestamp. SQLite is one file on one machine: its processes
        share the local clock.
        """
        connection = connections[self._using]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
                row = cursor.fetchone()
            assert row is not None
            return float(row[0])
        return time.time()

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """A transaction that, on Postgres, does not wait for its WAL flush at commit.

        Every operation commits while other workers queue on the same bucket row, so the
        commit's fsync would bound the whole installation's admission rate (about 150/s on
        a plain disk). Losing the last few milliseconds of limiter state in a database crash
        is harmless: buckets refill within a minute, and budgets are re-checked against
        recorded usage by callers. Only applied when this is the outermost transaction, so a
        caller's own transaction is never weakened.
        """
        connection = connections[self._using]
        outermost = not connection.in_atomic_block
        with transaction.atomic(using=self._using):
            if outermost and connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            yield

    def _unavailable(self, exc: Exception) -> LimiterUnavailable:
        return LimiterUnavailable(f"database limiter ({self._using}) is unavailable: {exc}")

    def _lock_buckets(self, keys: Iterable[str]) -> dict[str, LimiterBucket]:
        # ORDER BY key FOR UPDATE: Postgres locks rows in the sorted order, so two reservations
        # sharing buckets acquire them in the same order and cannot deadlock.
        rows = (
            LimiterBucket.objects.using(self._using)
            .select_for_update()
            .filter(key__in=sorted(set(keys)))
            .order_by("key")
        )
        return {row.key: row for row in rows}

    def _ensure_buckets(self, demands: Sequence[Demand]) -> None:
        wanted = {d.key: d for d in demands}
        existing = set(
            LimiterBucket.objects.using(self._using)
            .filter(key__in=list(wanted))
            .values_list("key", flat=True)
        )
        missing = sorted(set(wanted) - existing)
        if missing:
            # Sorted, ON CONFLICT DO NOTHING: two reservations creating the same new buckets
            # insert in the same order (an insert racing an uncommitted one waits for it, and
            # the sort keeps that wait acyclic). A new rate bucket starts full.
            LimiterBucket.objects.using(self._using).bulk_create(
                [
                    LimiterBucket(
                        key=key,
                        kind=wanted[key].kind,
                        tokens=wanted[key].limit if wanted[key].kind == "rate" else 0.0,
                        refilled_at=0.0,
                    )
                    for key in missing
                ],
                ignore_conflicts=True,
            )

    def _replay(self, reservation_id: str) -> Reservation | None:
        record = (
            LimiterReservation.objects.using(self._using)
            .filter(reservation_id=reservation_id)
            .only("demands")
            .first()
        )
        if record is None:
            return None
        return Reservation(
            reservation_id=reservation_id,
            granted=True,
            demands=tuple(Demand.from_wire(item) for item in record.demands),
            replayed=True,
        )

    @staticmethod
    def _rate_level(bucket: LimiterBucket, limit: float, now: float) -> float:
        elapsed = max(0.0, now - bucket.refilled_at)
        return min(limit, bucket.tokens + elapsed * limit / 60.0)

    def _gauge_level(self, key: str, now: float) -> float:
        holds = LimiterHold.objects.using(self._using).filter(bucket_key=key)
        holds.filter(expires_at__lte=now).delete()  # a lost release self-heals
        total = holds.filter(expires_at__gt=now).aggregate(total=Sum("amount"))["total"]
        return float(total or 0.0)

    def reserve(
        self,
        *,
        reservation_id: str,
        demands: Sequence[Demand],
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        hold_seconds: float = GAUGE_HOLD_SECONDS,
    ) -> Reservation:
        taken = _validate_reserve(reservation_id, demands, retry_seconds, hold_seconds)
        try:
            if random.randrange(self.PURGE_EVERY) == 0:
                self.purge_expired()
            replay = self._replay(reservation_id)
            if replay is not None:
                return replay
            try:
                return self._reserve_locked(reservation_id, taken, retry_seconds, hold_seconds)
            except IntegrityError:
                # A concurrent reserve with the same id committed first (unique
                # reservation_id); our transaction rolled back, so we took nothing.
                replay = self._replay(reservation_id)
                if replay is None:
                    raise
                return replay
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    def _reserve_locked(
        self,
        reservation_id: str,
        demands: tuple[Demand, ...],
        retry_seconds: float,
        hold_seconds: float,
    ) -> Reservation:
        with self._atomic():
            self._ensure_buckets(demands)
            buckets = self._lock_buckets(d.key for d in demands)
            # No replay re-check here: if a same-id reserve commits first, our INSERT of the
            # record below fails on the unique reservation_id and the whole transaction
            # (tokens included) rolls back; reserve() then answers with the replay.
            now = self._now()

            # Phase 1: evaluate every bucket without writing (a denial takes nothing).
            levels: dict[str, float] = {}
            worst: _Denial | None = None
            never: str | None = None
            for d in demands:
                bucket = buckets[d.key]
                denial: _Denial | None = None
                if d.kind == "rate":
                    tokens = self._rate_level(bucket, d.limit, now)
                    levels[d.key] = tokens
                    need = min(d.amount, d.limit)  # over-capacity: admit when full, leave debt
                    if d.amount > 0 and tokens + _eps(d.limit) < need:
                        wait = max((need - tokens) * 60.0 / d.limit, MIN_RATE_RETRY_SECONDS)
                        denial = _Denial(wait, "rate_limited", d.key)
                elif d.kind == "gauge":
                    held = self._gauge_level(d.key, now)
                    if d.amount > 0 and (
                        (d.amount > d.limit and held > _eps(d.limit))
                        or (d.amount <= d.limit and held + d.amount > d.limit + _eps(d.limit))
                    ):
                        denial = _Denial(retry_seconds, "gauge_full", d.key)
                else:
                    used = bucket.tokens
                    levels[d.key] = used
                    if d.amount > 0:
                        if d.amount > d.limit + _eps(d.limit):
                            never = never or d.key
                        elif used + d.amount > d.limit + _eps(d.limit):
                            denial = _Denial(retry_seconds, "budget_exhausted", d.key)
                if denial is not None and (worst is None or denial.wait > worst.wait):
                    worst = denial
            if never is not None:
                return Reservation(
                    reservation_id=reservation_id,
                    granted=False,
                    retry_after=None,
                    reason="exceeds_capacity",
                    bucket=never,
                )
            if worst is not None:
                return Reservation(
                    reservation_id=reservation_id,
                    granted=False,
                    retry_after=worst.wait,
                    reason=worst.reason,
                    bucket=worst.bucket,
                )

            # Phase 2: take everything.
            holds: list[LimiterHold] = []
            for d in demands:
                bucket = buckets[d.key]
                if d.kind == "rate":
                    bucket.tokens = levels[d.key] - d.amount
                    bucket.refilled_at = now
                    bucket.save(update_fields=["tokens", "refilled_at", "updated_at"])
                elif d.kind == "gauge":
                    if d.amount > 0:
                        holds.append(
                            LimiterHold(
                                bucket_key=d.key,
                                reservation_id=reservation_id,
                                amount=d.amount,
                                expires_at=now + hold_seconds,
                            )
                        )
                else:
                    bucket.tokens = levels[d.key] + d.amount
                    bucket.save(update_fields=["tokens", "updated_at"])
            LimiterHold.objects.using(self._using).bulk_create(holds)
            LimiterReservation.objects.using(self._using).create(
                reservation_id=reservation_id,
                demands=[d.to_wire() for d in demands],
                expires_at=timezone.now() + timedelta(seconds=_record_ttl(demands, hold_seconds)),
            )
        return Reservation(reservation_id=reservation_id, granted=True, demands=demands)

    def _locked_record(self, reservation_id: str) -> LimiterReservation | None:
        return (
            LimiterReservation.objects.using(self._using)
            .select_for_update()
            .filter(reservation_id=reservation_id)
            .first()
        )

    def settle(self, *, reservation_id: str, actual: Mapping[str, float]) -> Outcome:
        try:
            with self._atomic():
                record = self._locked_record(reservation_id)
                if record is None:
                    return "missing"
                demands = [Demand.from_wire(item) for item in record.demands]
                clean = _validate_actual(demands, actual)
                if record.settled_at is not None or record.refunded_at is not None:
                    return "noop"
                self._ensure_buckets([d for d in demands if d.key in clean])
                buckets = self._lock_buckets(clean)
                now = self._now()
                for d in demands:
                    if d.key not in clean:
                        continue
                    bucket = buckets[d.key]
                    delta = clean[d.key] - d.amount
                    if d.kind == "rate":
                        bucket.tokens = min(d.limit, self._rate_level(bucket, d.limit, now) - delta)
                        bucket.refilled_at = now
                    else:
                        bucket.tokens = max(0.0, bucket.tokens + delta)
                    bucket.save(update_fields=["tokens", "refilled_at", "updated_at"])
                record.settled_at = timezone.now()
                record.save(update_fields=["settled_at"])
                return "applied"
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    def release(self, *, reservation_id: str) -> Outcome:
        try:
            with self._atomic():
                record = self._locked_record(reservation_id)
                if record is None:
                    return "missing"
                if record.released_at is not None:
                    return "noop"
                LimiterHold.objects.using(self._using).filter(
                    reservation_id=reservation_id
                ).delete()
                record.released_at = timezone.now()
                record.save(update_fields=["released_at"])
                return "applied"
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    def refund(self, *, reservation_id: str) -> Outcome:
        try:
            with self._atomic():
                record = self._locked_record(reservation_id)
                if record is None:
                    return "missing"
                if record.refunded_at is not None:
                    return "noop"
                demands = [Demand.from_wire(item) for item in record.demands]
                if record.settled_at is None:
                    returned = [d for d in demands if d.kind != "gauge"]
                    self._ensure_buckets(returned)
                    buckets = self._lock_buckets(d.key for d in returned)
                    now = self._now()
                    for d in returned:
                        bucket = buckets[d.key]
                        if d.kind == "rate":
                            level = self._rate_level(bucket, d.limit, now)
                            bucket.tokens = min(d.limit, level + d.amount)
                            bucket.refilled_at = now
                        else:
                            bucket.tokens = max(0.0, bucket.tokens - d.amount)
                        bucket.save(update_fields=["tokens", "refilled_at", "updated_at"])
                if record.released_at is None:
                    LimiterHold.objects.using(self._using).filter(
                        reservation_id=reservation_id
                    ).delete()
                stamp = timezone.now()
                record.refunded_at = stamp
                record.released_at = record.released_at or stamp
                record.save(update_fields=["refunded_at", "released_at"])
                return "applied"
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    def level(self, *, bucket: str, dimension: str, kind: DemandKind, limit: float) -> float:
        probe = Demand(bucket=bucket, dimension=dimension, kind=kind, limit=limit, amount=0)
        try:
            now = self._now()
            if kind == "gauge":
                with transaction.atomic(using=self._using):
                    return self._gauge_level(probe.key, now)
            row = LimiterBucket.objects.using(self._using).filter(key=probe.key).first()
            if row is None:
                return limit if kind == "rate" else 0.0
            return self._rate_level(row, limit, now) if kind == "rate" else row.tokens
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    def purge_expired(self) -> int:
        """Delete reservation records past their TTL and gauge holds past their expiry."""
        now = self._now()
        records, _ = (
            LimiterReservation.objects.using(self._using)
            .filter(expires_at__lt=timezone.now())
            .delete()
        )
        holds, _ = LimiterHold.objects.using(self._using).filter(expires_at__lte=now).delete()
        return records + holds


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

_LIMITERS: dict[str, Limiter] = {}
_LIMITERS_LOCK = threading.Lock()


def get_limiter() -> Limiter:
    """``RedisLimiter`` when ``settings.JUDGE_REDIS_URL`` is set, else ``DatabaseLimiter``.

    Instances are cached per URL: script objects and the connection pool are reused.
    """
    url: str | None = getattr(settings, "JUDGE_REDIS_URL", None)
    cache_key = url or "db:default"
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(cache_key)
        if limiter is None:
            limiter = RedisLimiter(url=url) if url else DatabaseLimiter()
            _LIMITERS[cache_key] = limiter
        return limiter


_RATE_FIELDS: tuple[tuple[str, Dimension], ...] = (
    ("requests_per_minute", Dimension.REQUESTS),
    ("input_tokens_per_minute", Dimension.INPUT_TOKENS),
    ("output_tokens_per_minute", Dimension.OUTPUT_TOKENS),
)


def policy_demands(
    *,
    policy: EffectivePolicy,
    requests: int = 0,
    input_tokens: int = 0,
    output_tokens: int = 0,
    enqueued_tokens: int = 0,
    budget_tokens: int = 0,
    cost_micro_usd: int = 0,
    budget_owner: str | None = None,
) -> list[Demand]:
    """The demands for one call or batch under ``policy``, on the buckets that own each limit.

    A demand is built for every limit that is set and every amount > 0. Reserve an *estimate*
    (output tokens: ``policy.output_token_cap``), then settle the observed usage.
    ``budget_owner`` overrides the budget buckets' owner (e.g. ``run:42`` for per-run
    budgets); by default budgets, like limits, belong to the scope that set them.
    """
    demands: list[Demand] = []
    for name, dimension in _RATE_FIELDS:
        limit = policy.value(name)
        amount = {"requests_per_minute": requests, "input_tokens_per_minute": input_tokens}.get(
            name, output_tokens
        )
        if limit is not None and amount > 0:
            demands.append(
                Demand(
                    bucket=policy.bucket_owner(name),
                    dimension=dimension,
                    kind="rate",
                    limit=float(limit),
                    amount=float(amount),
                )
            )
    if policy.batch_enqueued_tokens is not None and enqueued_tokens > 0:
        demands.append(
            Demand(
                bucket=policy.bucket_owner("batch_enqueued_tokens"),
                dimension=Dimension.BATCH_ENQUEUED_TOKENS,
                kind="gauge",
                limit=float(policy.batch_enqueued_tokens),
                amount=float(enqueued_tokens),
            )
        )
    if policy.token_budget is not None and budget_tokens > 0:
        demands.append(
            Demand(
                bucket=budget_owner or policy.bucket_owner("token_budget"),
                dimension=Dimension.TOKEN_BUDGET,
                kind="budget",
                limit=float(policy.token_budget),
                amount=float(budget_tokens),
            )
        )
    if policy.dollar_budget is not None and cost_micro_usd > 0:
        demands.append(
            Demand(
                bucket=budget_owner or policy.bucket_owner("dollar_budget"),
                dimension=Dimension.DOLLAR_BUDGET_MICRO,
                kind="budget",
                limit=float(int(policy.dollar_budget * 1_000_000)),
                amount=float(cost_micro_usd),
            )
        )
    return demands
