"""Fixtures for the policies tests: both limiter backends on real Redis (DB 13) and Postgres."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis

from policies.limiter import DatabaseLimiter, Limiter, RedisLimiter
from policies.models import Policy

#: The only Redis database these tests may touch (flushed per test).
REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def redis_limiter() -> Iterator[RedisLimiter]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield RedisLimiter(url=REDIS_URL)
    client.flushdb()
    client.close()


@pytest.fixture
def db_limiter(db: None) -> DatabaseLimiter:
    return DatabaseLimiter()


@pytest.fixture(params=["redis", "db"])
def limiter(request: pytest.FixtureRequest) -> Limiter:
    """Each limiter test runs once per backend."""
    name = "redis_limiter" if request.param == "redis" else "db_limiter"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_policies(db: None) -> None:
    """Start from an empty table (the data migration seeds a global row)."""
    Policy.objects.all().delete()
