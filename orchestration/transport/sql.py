"""Bulk SQL helpers for the hot paths.

Why not the ORM here: ``bulk_update`` runs ~3.6k rows/s (a giant CASE per column) and
``bulk_create`` ~23k rows/s, while 10^6-row runs need COPY and ``UPDATE ... FROM unnest(...)``
(PROOF.md 3). Each helper has a PostgreSQL fast path and a portable path for the embedded
SQLite default, where volumes are small.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a worker keeps retrying one idempotent unit of work while the database is away
#: (a Postgres restart takes a few seconds). Longer outages fall back to lease expiry.
DB_OUTAGE_GRACE_S = 20.0


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def bound_cursor() -> Iterator[Any]:
    """A Django cursor whose parameters travel separately from the SQL (PostgreSQL).

    Django's psycopg 3 backend binds client-side by default: every element of a 1,000-row
    array is quoted into the statement text in Python, which profiled as ~20% of the CPU of
    applying a batch. The hot statements (arrays of ids and outputs) use a server-binding
    cursor instead; it shares the connection, so it shares the transaction, and it is
    wrapped like any Django cursor (error translation, query logging for tests). Elsewhere
    (SQLite) it is the ordinary cursor.

    Always cast array parameters (``%s::bigint[]``): a bound list of Python ints may arrive
    typed ``numeric[]``, and ``id = ANY(numeric[])`` cannot use the primary key: measured, it
    turned every shard assignment into a sequential scan (4x the database time of a run).
    """
    if not is_postgres():
        with connection.cursor() as cursor:
            yield cursor
        return
    from django.db.backends.postgresql import base as pg_base

    connection.ensure_connection()
    connection.validate_thread_sharing()
    # django-stubs types make_cursor()'s argument as a CursorWrapper; it takes the raw cursor.
    raw: Any = pg_base.ServerBindingCursor(connection.connection)  # type: ignore[call-arg]
    wrapped = (
        connection.make_debug_cursor(raw)
        if connection.queries_logged
        else connection.make_cursor(raw)
    )
    with wrapped as cursor:
        yield cursor


def retry_on_db_outage(fn: Callable[[], T], *, what: str, grace_s: float = DB_OUTAGE_GRACE_S) -> T:
    """Run ``fn``; when the connection fails (``OperationalError``/``InterfaceError``: a
    Postgres restart, a dropped socket), drop the connection and run it again, backing off
    from 0.25 s to 2 s, until ``grace_s`` has passed; then the error propagates.

    Only for idempotent units of work that open their own transaction (a conditional apply,
    a lease update) and only outside any atomic block, where a retry cannot see half a
    transaction. Why: without it a task that met a restart died and its leases held its
    work for a whole lease period (60+ s), and a direct runner lost the results of calls
    already paid for (docs/PROOF_RESULTS.md finding 8).
    """
    deadline = time.monotonic() + grace_s
    delay = 0.25
    while True:
        try:
            return fn()
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block or time.monotonic() + delay > deadline:
                raise
            logger.warning("database unavailable during %s (%s); retrying in %.2fs",
                           what, exc, delay)  # fmt: skip
            with suppress(DatabaseError):
                connection.close()  # the next query opens a fresh connection
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def pg_array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal (``{1,2}``, ``{"a \\"b\\"",NULL}``) for ``%s::<type>[]``.

    Why not pass the list: psycopg quotes each element of a list parameter in Python, which
    profiled at ~10 ms of CPU per 1,000-row apply chunk (a seventh of a worker's CPU in a
    batch run); joining one literal costs ~1 ms. Every non-integer element is quoted, with
    backslash and double quote escaped, which is valid for any element type PostgreSQL
    parses from text (text, timestamptz, numeric, boolean). The cast in the statement gives
    the element type.
    """
    parts: list[str] = []
    append = parts.append
    for value in values:
        if value is None:
            append("NULL")
        elif value is True or value is False:
            append("t" if value else "f")
        elif type(value) is int:
            append(str(value))
        elif isinstance(value, dict | list | tuple | bytes | bytearray):
            raise TypeError(f"pg_array takes scalars, not {type(value).__name__}")
        else:
            text = value.isoformat() if isinstance(value, datetime) else str(value)
            append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


def update_from_rows(
    *,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    where: str = "",
    returning_ids: bool = True,
) -> list[int]:
    """``UPDATE table SET col = v.col ... WHERE table.id = v.id [AND where]`` for many rows.

    ``columns`` are ``(name, pg_type)`` pairs; the first must be ``("id", "bigint")``.
    ``where`` is extra SQL on the target table aliased ``t`` (e.g. ``t.status = 'in_flight'``),
    which is how callers make updates conditional (idempotent under redelivery).
    Returns the ids actually updated.
    """
    if not rows:
        return []
    names = [name for name, _ in columns]
    if names[0] != "id":
        raise ValueError("the first column must be id")
    set_clause = ", ".join(f"{name} = v.{name}" for name in names[1:])
    extra = f" AND ({where})" if where else ""
    if is_postgres():
        arrays = [pg_array(row[i] for row in rows) for i in range(len(names))]
        unnest = ", ".join(f"%s::{pg_type}[]" for _, pg_type in columns)
        sql = (
            f"UPDATE {table} AS t SET {set_clause} "
            f"FROM unnest({unnest}) AS v({', '.join(names)}) "
            f"WHERE t.id = v.id{extra}"
        )
        if returning_ids:
            sql += " RETURNING t.id"
        with bound_cursor() as cursor:
            cursor.execute(sql, arrays)
            return [r[0] for r in cursor.fetchall()] if returning_ids else []
    # SQLite: one statement per row (demo-sized volumes); RETURNING needs SQLite >= 3.35.
    set_sqlite = ", ".join(f"{name} = %s" for name in names[1:])
    where_sqlite = extra.replace("t.", f"{table}.")
    sql = f"UPDATE {table} SET {set_sqlite} WHERE {table}.id = %s{where_sqlite} RETURNING id"
    updated: list[int] = []
    with connection.cursor() as cursor:
        for row in rows:
            cursor.execute(sql, [*row[1:], row[0]])
            got = cursor.fetchone()
            if got is not None:
                updated.append(got[0])
    return updated
