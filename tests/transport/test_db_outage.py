"""``retry_on_db_outage``: rides out a broken connection, never inside a transaction, and
gives up after its grace period."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection, transaction

from orchestration.transport.sql import retry_on_db_outage

pytestmark = pytest.mark.django_db(transaction=True)


def _select_one() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def test_reconnects_after_the_connection_broke() -> None:
    connection.ensure_connection()
    connection.connection.close()  # as a Postgres restart leaves it
    assert retry_on_db_outage(_select_one, what="test") == 1


def test_gives_up_after_the_grace_period() -> None:
    calls = []

    def always_down() -> int:
        calls.append(1)
        raise OperationalError("the database system is starting up")

    with pytest.raises(OperationalError):
        retry_on_db_outage(always_down, what="test", grace_s=0.6)
    assert 2 <= len(calls) <= 4  # 0.25 s then 0.5 s back-off within 0.6 s


def test_never_retries_inside_a_transaction() -> None:
    calls = []

    def down() -> int:
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    with pytest.raises(OperationalError), transaction.atomic():
        retry_on_db_outage(down, what="test")
    assert calls == [1]


def test_other_errors_are_not_retried() -> None:
    calls = []

    def bug() -> int:
        calls.append(1)
        raise ValueError("not a database outage")

    with pytest.raises(ValueError, match="not a database outage"):
        retry_on_db_outage(bug, what="test")
    assert calls == [1]
