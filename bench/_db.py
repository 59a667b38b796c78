"""The one piece of set-up every benchmark shares: a fresh database of its own.

Each benchmark owns a database (``jg_bench``, ``jg_bench_ops`` ...) so runs never see each
other's rows or the test suite's; dropping it ``WITH (FORCE)`` also ends connections left by
an interrupted earlier run. Plain psycopg, so it can run before ``django.setup()``.
"""

from __future__ import annotations


def recreate_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
