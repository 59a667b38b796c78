"""Typed, loud environment readers.

Why: a mis-typed setting must stop the process at import with a message that names the
variable and the fix, never silently fall back (STYLE.md habit 15). Every secret may also be
given as ``NAME_FILE`` pointing at a file (Docker/Kubernetes secrets), which wins over ``NAME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str | None = None) -> str | None:
    """Return ``NAME`` (or the content of the file named by ``NAME_FILE``), else ``default``."""
    file_var = os.environ.get(f"{name}_FILE")
    if file_var:
        path = Path(file_var)
        if not path.is_file():
            raise ImproperlyConfigured(
                f"{name}_FILE={file_var!r} does not name a readable file; "
                f"fix the path or set {name} directly."
            )
        return path.read_text(encoding="utf-8").strip()
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no."
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True)
class DatabaseSettings:
    """The parts of ``DATABASE_URL`` Django needs, as a ``DATABASES['default']`` dict."""

    config: dict[str, object]
    is_postgres: bool


def parse_database_url(url: str, *, base_dir: Path) -> DatabaseSettings:
    """Parse ``postgres://user:pass@host:port/name?opt=..`` or ``sqlite:///path``.

    Relative SQLite paths (``sqlite:///var/db.sqlite3``) resolve against ``base_dir``.
    """
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in {"postgres", "postgresql", "pgsql", "postgresql+psycopg"}:
        name = unquote(parsed.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured(
                f"DATABASE_URL={url!r} has no database name; use postgres://user@host:5432/dbname."
            )
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        conn_max_age = int(options.pop("conn_max_age", "60"))
        return DatabaseSettings(
            config={
                "ENGINE": "django.db.backends.postgresql",
                "NAME": name,
                "USER": unquote(parsed.username or ""),
                "PASSWORD": unquote(parsed.password or ""),
                "HOST": parsed.hostname or "",
                "PORT": str(parsed.port or ""),
                "CONN_MAX_AGE": conn_max_age,
                "CONN_HEALTH_CHECKS": True,
                "OPTIONS": options,
            },
            is_postgres=True,
        )
    if scheme == "sqlite":
        raw_path = unquote(parsed.path)
        path = Path(raw_path[1:]) if raw_path.startswith("//") else base_dir / raw_path.lstrip("/")
        if raw_path in {"", "/"}:
            raise ImproperlyConfigured(
                "DATABASE_URL=sqlite:// needs a file path, e.g. sqlite:///var/judge_gym.sqlite3."
            )
        return DatabaseSettings(
            config={
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(path),
                "OPTIONS": {
                    # Several processes (worker, beat, web) share the file in the embedded
                    # default: WAL lets readers run beside one writer; the busy timeout turns
                    # writer contention into a short wait instead of "database is locked".
                    "timeout": 30,
                    "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                },
            },
            is_postgres=False,
        )
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {scheme!r} is not supported; use postgres://… or sqlite:///…."
    )
