"""``manage.py export_run``: output, default path, and exit codes (in-process and real)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from orchestration.export import run_export
from tests.export.builders import Crafted, crafted_run

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_export_by_tag_prints_path_rows_and_summary(crafted: Crafted, tmp_path: Path) -> None:
    out = StringIO()
    path = tmp_path / "r.jsonl"
    call_command("export_run", "exp-export", "--format", "jsonl", "--out", str(path), stdout=out)
    text = out.getvalue()
    assert f"exported 6 rows to {path}" in text
    assert f"manifest: {path}.manifest.json" in text
    assert "abstain_rate=0.250" in text
    assert len(path.read_text(encoding="utf-8").splitlines()) == 6


@pytest.mark.django_db
def test_default_path_under_var_exports(crafted: Crafted, tmp_path: Path, settings) -> None:
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("export_run", str(crafted.run.pk), "--format", "csv", stdout=out)
    expected = tmp_path / "exports" / f"exp-export-run{crafted.run.pk}.csv"
    assert expected.exists()
    assert str(expected) in out.getvalue()


@pytest.mark.django_db
def test_unknown_run_is_a_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as info:
        call_command("export_run", "no-such-tag", "--out", str(tmp_path / "x.parquet"))
    assert info.value.returncode == 4
    assert "not_found" in str(info.value)
    assert "experiment tag" in str(info.value)  # the fix


@pytest.mark.django_db
def test_incomplete_run_needs_the_flag(tmp_path: Path) -> None:
    c = crafted_run(status="running")
    path = tmp_path / "x.parquet"
    with pytest.raises(CommandError) as info:
        call_command("export_run", str(c.run.pk), "--out", str(path))
    assert info.value.returncode == 4
    assert "--allow-incomplete" in str(info.value)
    assert not path.exists()
    out = StringIO()
    call_command("export_run", str(c.run.pk), "--out", str(path), "--allow-incomplete", stdout=out)
    assert "exported 6 rows" in out.getvalue()


def _manage(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command in a child process against the (committed) test database."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "judge_project.settings_test",
        "DATABASE_URL": f"postgres://{quote(db['USER'])}"
        + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
        + f"@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "export_run", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.django_db(transaction=True)
def test_exit_codes_of_the_real_process(tmp_path: Path) -> None:
    """Committed data (transaction=True): also exercises the REPEATABLE READ snapshot path."""
    done = crafted_run(tag="exp-done")
    running = crafted_run(status="running", tag="exp-running")

    ok = _manage("exp-done", "--format", "csv", "--out", str(tmp_path / "ok.csv"))
    assert ok.returncode == 0, ok.stderr
    assert "exported 6 rows" in ok.stdout
    manifest = json.loads((tmp_path / "ok.csv.manifest.json").read_text(encoding="utf-8"))
    assert manifest["run_id"] == done.run.pk

    missing = _manage("999999", "--out", str(tmp_path / "missing.csv"))
    assert missing.returncode == 4
    assert "no run found" in missing.stderr

    refused = _manage(str(running.run.pk), "--out", str(tmp_path / "r.csv"))
    assert refused.returncode == 4
    assert "--allow-incomplete" in refused.stderr
    assert not (tmp_path / "r.csv").exists()

    # The snapshot path in-process (outside any atomic block).
    assert not connection.in_atomic_block
    result = run_export(
        run=running.run, fmt="jsonl", path=tmp_path / "r.jsonl", allow_incomplete=True
    )
    assert result.rows == 6
