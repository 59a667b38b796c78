"""Settings fail loudly on bad values and read *_FILE secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from judge_project.env import env_bool, env_int, env_str, parse_database_url


def test_file_secret_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n")
    monkeypatch.setenv("SOME_KEY", "from-env")
    monkeypatch.setenv("SOME_KEY_FILE", str(secret))
    assert env_str("SOME_KEY") == "sk-from-file"


def test_missing_secret_file_is_loud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_KEY_FILE", "/nonexistent/path")
    with pytest.raises(ImproperlyConfigured, match="SOME_KEY_FILE"):
        env_str("SOME_KEY")


@pytest.mark.parametrize("raw", ["maybe", "2", "yess"])
def test_bad_bool(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match="FLAG"):
        env_bool("FLAG", default=False)


def test_bad_int_and_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N", "abc")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int("N", 1)
    monkeypatch.setenv("N", "0")
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env_int("N", 1, minimum=1)


def test_database_urls(tmp_path: Path) -> None:
    pg = parse_database_url("postgres://u:p%40ss@db:5433/judge?sslmode=require", base_dir=tmp_path)
    assert pg.is_postgres
    assert pg.config["NAME"] == "judge"
    assert pg.config["PASSWORD"] == "p@ss"
    assert pg.config["PORT"] == "5433"
    assert pg.config["OPTIONS"] == {"sslmode": "require"}
    lite = parse_database_url("sqlite:///var/x.sqlite3", base_dir=tmp_path)
    assert not lite.is_postgres
    assert lite.config["NAME"] == str(tmp_path / "var/x.sqlite3")
    with pytest.raises(ImproperlyConfigured, match="not supported"):
        parse_database_url("mysql://x/y", base_dir=tmp_path)
    with pytest.raises(ImproperlyConfigured, match="no database name"):
        parse_database_url("postgres://host:5432/", base_dir=tmp_path)
