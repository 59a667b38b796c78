"""Install the BEFORE UPDATE OR DELETE triggers that make both config tables append-only.

Vendor-aware (plpgsql on PostgreSQL, RAISE(ABORT) on SQLite); the SQL lives in
configs_app/db_triggers.py so later migrations can reinstall it after a SQLite table rebuild.
"""

from django.db import migrations

from configs_app import db_triggers


def forwards(apps, schema_editor):
    db_triggers.install(schema_editor)


def backwards(apps, schema_editor):
    db_triggers.uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("configs_app", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
