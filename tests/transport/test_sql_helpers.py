"""``pg_array`` literals round-trip through PostgreSQL; worker tasks keep their connection.

The hot statements pass their arrays as one literal (``pg_array``) instead of a Python list
that psycopg would quote element by element; a literal that PostgreSQL parses differently
from what was meant would silently corrupt outputs, so every awkward value is checked here
against the database itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection

from orchestration.transport.sql import bound_cursor, pg_array

pytestmark = pytest.mark.django_db(transaction=True)

AWKWARD_TEXT: list[str | None] = [
    "",
    "plain",
    'a "quoted" word',
    "back\\slash and \\\\ double",
    "ends with a backslash \\",
    '\\"',
    "{braces}, commas, and (parens)",
    "NULL",
    "null",
    " leading and trailing spaces ",
    "new\nline\ttab\rreturn",
    "unicode: é 漢字 🙂",
    'VERDICT: A\n\n{"json": [1, 2, {"k": "v"}]}',
    None,
    "x" * 20_000,
]


def _roundtrip(values: list[Any], pg_type: str) -> list[Any]:
    with bound_cursor() as cursor:
        cursor.execute(f"SELECT %s::{pg_type}[]", [pg_array(values)])
        row = cursor.fetchone()
    assert row is not None
    return list(row[0])


def test_text_values_survive_exactly() -> None:
    assert _roundtrip(AWKWARD_TEXT, "text") == AWKWARD_TEXT


def test_scalars_keep_their_types() -> None:
    assert _roundtrip([1, -2, 2**62, None], "bigint") == [1, -2, 2**62, None]
    assert _roundtrip([True, False, None], "boolean") == [True, False, None]
    assert _roundtrip([0.25, 1e-9, None], "double precision") == [0.25, 1e-9, None]
    assert _roundtrip([Decimal("1.10"), None], "numeric") == [Decimal("1.10"), None]
    moments = [
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7))),
    ]
    assert _roundtrip(moments, "timestamptz") == moments


def test_empty_and_unnest_alignment() -> None:
    assert _roundtrip([], "text") == []
    ids = list(range(1, 1001))
    texts = [f'row "{i}" \\ {{' for i in ids]
    with bound_cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM unnest(%s::bigint[], %s::text[]) AS v(id, t) "
            "WHERE t = 'row \"' || id || '\" \\ {'",
            [pg_array(ids), pg_array(texts)],
        )
        row = cursor.fetchone()
    assert row == (1000,)


@pytest.mark.parametrize("bad", [{"a": 1}, [1], (1,), b"x"])
def test_non_scalars_are_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="scalars"):
        pg_array([1, bad])


def _fake_task(*, eager: bool) -> Any:
    return SimpleNamespace(request=SimpleNamespace(is_eager=eager))


def test_tasks_reuse_a_healthy_connection_and_drop_a_broken_one() -> None:
    """Celery's fixup would close the connection around every task; ours keeps it."""
    from celery.fixups.django import DjangoWorkerFixup

    from judge_project.celery import _db_hygiene, app

    connection.ensure_connection()
    raw = connection.connection
    fixup = DjangoWorkerFixup(app)
    fixup.on_task_prerun(_fake_task(eager=False))
    _db_hygiene(sender=_fake_task(eager=False))
    fixup.on_task_postrun(_fake_task(eager=False))
    _db_hygiene(sender=_fake_task(eager=False))
    assert connection.connection is raw, "a healthy connection was closed between tasks"

    connection.errors_occurred = True
    raw.close()  # as a Postgres restart leaves it
    _db_hygiene(sender=_fake_task(eager=False))
    assert connection.connection is None, "a broken connection was kept"
    with connection.cursor() as cursor:  # the next task reconnects
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_eager_tasks_leave_the_callers_transaction_alone() -> None:
    from django.db import transaction

    from judge_project.celery import _db_hygiene

    with transaction.atomic():
        connection.ensure_connection()
        raw = connection.connection
        _db_hygiene(sender=_fake_task(eager=True))
        assert connection.connection is raw
        assert connection.in_atomic_block
