"""Database-level immutability for the config tables (the last of three layers).

Why triggers when the models and querysets already refuse: ``Model.save()`` and
``QuerySet.update()`` guards only cover Django code paths. A raw ``UPDATE`` from a psql
session, a data migration written in SQL, or another service sharing the database would
bypass them. Append-only history is what makes a ``spec_signature`` mean something months
later, so the database itself refuses.

* PostgreSQL: one plpgsql function raising an exception, attached as ``BEFORE UPDATE OR
  DELETE ... FOR EACH ROW`` triggers. Row triggers do not fire on ``TRUNCATE``, so Django's
  ``flush`` (which truncates on PostgreSQL; used by pytest-django transactional tests) still
  works. Deliberately no ``BEFORE TRUNCATE`` trigger for that reason.
* SQLite: ``RAISE(ABORT, ...)`` triggers, one per event (SQLite triggers take one event).
  Django's ``flush`` on SQLite issues ``DELETE``, which these triggers refuse: the test suite
  runs on PostgreSQL, and on an embedded SQLite database wiping configs is not supported
  (delete the database file instead).

Caveat for future migrations: on SQLite, Django applies most ``AlterField``/``RemoveField``
operations by rebuilding the table, which drops its triggers. A migration that alters these
tables must call :func:`install` again afterwards (``migrations.RunPython(forwards, ...)``).
"""

from __future__ import annotations

from typing import Any

TABLES = ("configs_app_configtemplate", "configs_app_runconfig")
FUNCTION = "configs_app_refuse_mutation"
MESSAGE = "append-only: rows are immutable (create a new template version or run config)"


def _postgres_install() -> list[str]:
    statements = [
        f"""
        CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% on % refused: {MESSAGE}', TG_OP, TG_TABLE_NAME;
        END
        $$;
        """
    ]
    for table in TABLES:
        statements.append(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table};")
        statements.append(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}();"
        )
    return statements


def _postgres_uninstall() -> list[str]:
    statements = [f"DROP TRIGGER IF EXISTS {table}_immutable ON {table};" for table in TABLES]
    statements.append(f"DROP FUNCTION IF EXISTS {FUNCTION}();")
    return statements


def _sqlite_install() -> list[str]:
    statements: list[str] = []
    for table in TABLES:
        for event in ("UPDATE", "DELETE"):
            name = f"{table}_no_{event.lower()}"
            statements.append(f"DROP TRIGGER IF EXISTS {name};")
            statements.append(
                f"CREATE TRIGGER {name} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{event} on {table} refused: {MESSAGE}'); END;"
            )
    return statements


def _sqlite_uninstall() -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_{event};"
        for table in TABLES
        for event in ("update", "delete")
    ]


def install(schema_editor: Any) -> None:
    """Install the triggers for whichever database the migration runs on."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        statements = _postgres_install()
    elif vendor == "sqlite":
        statements = _sqlite_install()
    else:
        # Other backends get only the model/queryset guards; say so instead of pretending.
        raise NotImplementedError(f"no immutability triggers for database vendor {vendor!r}")
    for statement in statements:
        schema_editor.execute(statement, None)  # None: "%" in plpgsql is not a placeholder


def uninstall(schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        statements = _postgres_uninstall()
    elif vendor == "sqlite":
        statements = _sqlite_uninstall()
    else:
        return
    for statement in statements:
        schema_editor.execute(statement, None)  # None: "%" in plpgsql is not a placeholder
