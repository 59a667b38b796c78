"""The Redis broker transport survives a torn-down connection (judge_project/broker.py)."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

from kombu.transport import redis as kombu_redis

from judge_project import broker
from judge_project.celery import app


def _qos(client: Any) -> broker.QoS:
    qos = broker.QoS.__new__(broker.QoS)  # no channel/Redis needed for these two paths
    qos.channel = SimpleNamespace(connection=SimpleNamespace(client=client))
    qos._delivered = OrderedDict([("tag-1", object()), ("tag-2", object())])
    return qos


def test_restore_and_ack_on_a_torn_down_transport_do_not_raise() -> None:
    qos = _qos(client=None)  # what kombu leaves behind while closing after a Redis restart
    qos.ack("tag-1")
    assert list(qos._delivered) == ["tag-2"]
    qos.restore_unacked()
    assert not qos._delivered


def test_a_live_transport_still_uses_kombus_own_code(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(kombu_redis.QoS, "ack", lambda self, tag: calls.append(f"ack {tag}"))
    monkeypatch.setattr(
        kombu_redis.QoS, "restore_unacked", lambda self, c=None: calls.append("restore")
    )
    qos = _qos(client=object())
    qos.ack("tag-1")
    qos.restore_unacked()
    assert calls == ["ack tag-1", "restore"]


def test_redis_brokers_use_the_surviving_transport() -> None:
    with app.connection_for_write("redis://127.0.0.1:6379/14") as conn:
        assert type(conn.transport).__name__ == "RedisTransport"
        assert conn.transport.Channel.QoS is broker.QoS
        assert conn.transport.driver_type == "redis"
