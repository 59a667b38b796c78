"""Settings for the test suite: real Postgres and Redis on loopback (override via env)."""

from __future__ import annotations

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/judge_gym")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("JUDGE_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("JUDGE_LOG_FORMAT", "text")
os.environ.setdefault("JUDGE_LOG_LEVEL", "WARNING")

from judge_project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
