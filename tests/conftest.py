"""Shared fixtures. Tests run against real Postgres and Redis (judge_project.settings_test)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
CONFORMANCE_DIR = SHARED_DIR / "conformance"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """../shared/conformance next to the checkout (CI clones main with shared/ beside it)."""
    if not CONFORMANCE_DIR.is_dir():
        raise RuntimeError(
            f"conformance data not found at {CONFORMANCE_DIR}; clone the repo next to shared/"
        )
    return CONFORMANCE_DIR
