"""Immutability of ConfigTemplate and RunConfig at the model, queryset and raw-SQL layers
(the admin layer is in test_admin.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from configs_app.models import ConfigTemplate, ImmutableRecordError, RunConfig
from configs_app.services import run_config_create, template_create

PROJECT_DIR = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db


@pytest.fixture
def template(body: dict[str, Any]) -> ConfigTemplate:
    return template_create(template_id="immut", body=body, notes="original")


@pytest.fixture
def run_config(template: ConfigTemplate) -> RunConfig:
    return run_config_create(template=template, resolved_policy={"max_attempts": 3}, git_sha="abc")


@pytest.fixture(params=["template", "run_config"])
def row(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def test_save_on_existing_row_refused(row: Any) -> None:
    row.config_body = {"tampered": True}
    with pytest.raises(ImmutableRecordError, match="immutable"):
        row.save()
    fresh = type(row).objects.get(pk=row.pk)
    assert fresh.config_body != {"tampered": True}


def test_save_with_update_fields_refused(row: Any) -> None:
    with pytest.raises(ImmutableRecordError):
        row.save(update_fields=["spec_signature"])


def test_delete_refused(row: Any) -> None:
    with pytest.raises(ImmutableRecordError, match="append-only"):
        row.delete()
    assert type(row).objects.filter(pk=row.pk).exists()


def test_queryset_update_and_delete_refused(row: Any) -> None:
    model = type(row)
    with pytest.raises(ImmutableRecordError, match="update"):
        model.objects.filter(pk=row.pk).update(spec_signature="0" * 64)
    with pytest.raises(ImmutableRecordError, match="delete"):
        model.objects.all().delete()
    with pytest.raises(ImmutableRecordError):
        model.objects.bulk_update([row], ["spec_signature"])
    assert model.objects.get(pk=row.pk).spec_signature == row.spec_signature


def test_related_manager_refuses_too(template: ConfigTemplate, run_config: RunConfig) -> None:
    with pytest.raises(ImmutableRecordError):
        template.run_configs.all().delete()
    with pytest.raises(ImmutableRecordError):
        template.run_configs.update(git_sha="x")


@pytest.mark.parametrize(
    ("table", "column"),
    [("configs_app_configtemplate", "notes"), ("configs_app_runconfig", "git_sha")],
)
def test_raw_sql_update_and_delete_refused_by_postgres(
    run_config: RunConfig, table: str, column: str
) -> None:
    assert connection.vendor == "postgresql", "the suite must run on PostgreSQL"
    for sql in (f"UPDATE {table} SET {column} = 'x'", f"DELETE FROM {table}"):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    template = ConfigTemplate.objects.get(pk=run_config.config_template_id)
    assert template.notes == "original"
    assert RunConfig.objects.get(pk=run_config.pk).git_sha == "abc"


@pytest.mark.django_db(transaction=True)
def test_truncate_still_works_on_postgres(run_config: RunConfig) -> None:
    """Row triggers do not fire on TRUNCATE, which Django's flush (transactional tests) uses;
    this test's own teardown flushes the committed rows again."""
    with connection.cursor() as cursor:
        # CASCADE: other apps' tables (orchestration runs) reference these, as in a flush.
        cursor.execute("TRUNCATE configs_app_runconfig, configs_app_configtemplate CASCADE")
    assert ConfigTemplate.objects.count() == 0
    assert RunConfig.objects.count() == 0


def test_sqlite_triggers(tmp_path: Path) -> None:
    """The embedded default: migrate a fresh SQLite file, then raw UPDATE/DELETE must abort."""
    db_path = tmp_path / "embedded.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db_path}",
        "DJANGO_SETTINGS_MODULE": "judge_project.settings",
        "JUDGE_VAR_DIR": str(tmp_path),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "configs_app", "-v", "0"],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    db = sqlite3.connect(db_path)
    db.execute(
        "INSERT INTO configs_app_configtemplate (template_id, version, schema_version, "
        "config_body, created_at, created_by, notes, spec_signature) "
        "VALUES ('t', 1, 1, '{}', '2026-01-01', '', 'n', 's')"
    )
    db.execute(
        "INSERT INTO configs_app_runconfig (run_config_id, config_template_id, template_id, "
        "template_version, config_body, resolved_policy, created_at, git_sha, spec_signature, "
        "validation_status, validation_errors) "
        "VALUES ('0123456789abcdef0123456789abcdef', 1, 't', 1, '{}', '{}', '2026-01-01', "
        "'abc', 's', 'valid', '[]')"
    )
    db.commit()
    for table, column in (("configtemplate", "notes"), ("runconfig", "git_sha")):
        for sql in (
            f"UPDATE configs_app_{table} SET {column} = 'x'",
            f"DELETE FROM configs_app_{table}",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)
    assert db.execute("SELECT notes FROM configs_app_configtemplate").fetchall() == [("n",)]
    assert db.execute("SELECT git_sha FROM configs_app_runconfig").fetchall() == [("abc",)]
    db.close()
