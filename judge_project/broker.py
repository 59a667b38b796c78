"""kombu's Redis transport, made to survive a Redis restart under ``acks_late``.

Why this exists (docs/PROOF_RESULTS.md finding 5, chaos scenario F4R): when Redis goes away,
the worker's consumer closes its connection. Closing a channel restores its delivered but
unacked messages (``QoS.restore_unacked``), and kombu builds a *new* Redis client for that
from ``transport.client``, which the teardown has already set to ``None``:
``AttributeError: 'NoneType' object has no attribute 'hostname'`` escapes as an
"unrecoverable error" and the worker process exits instead of reconnecting. The same
happens when a task finishes after the loss and its late ack runs on the dead channel.

Nothing is lost by skipping those two operations here: the messages are hints (Postgres
holds every piece of state, and the tick re-derives due work from it), a restarted Redis has
no unacked index to restore into, and on a mere network blip the unacked messages stay in
Redis and come back after the visibility timeout like any unacked message. So when the
transport is already torn down, the restore and the ack are logged and skipped; everything
else is kombu's own code. Selected by ``CELERY_BROKER_TRANSPORT`` for ``redis://`` brokers.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

logger = logging.getLogger(__name__)


def _torn_down(qos: redis.QoS) -> bool:
    """The channel's transport has dropped its connection info (a broker loss is underway)."""
    return getattr(qos.channel.connection, "client", None) is None


class QoS(redis.QoS):  # type: ignore[misc]
    def restore_unacked(self, client: Any = None) -> None:
        if client is None and _torn_down(self):
            delivered: dict[Any, Any] = self._delivered or {}
            logger.warning(
                "broker connection lost: %d unacked message(s) not restored (the database "
                "re-drives their work)",
                len(delivered),
            )
            delivered.clear()
            return
        super().restore_unacked(client)

    def ack(self, delivery_tag: Any) -> None:
        if _torn_down(self):
            logger.warning("broker connection lost: late ack of %s skipped", delivery_tag)
            if self._delivered is not None:
                self._delivered.pop(delivery_tag, None)
            return
        super().ack(delivery_tag)


class Channel(redis.Channel):  # type: ignore[misc]
    QoS = QoS


class RedisTransport(redis.Transport):  # type: ignore[misc]
    Channel = Channel
