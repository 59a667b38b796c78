"""Fixtures for export tests (builders live in builders.py so transactional tests reuse them)."""

from __future__ import annotations

import pytest

from tests.export.builders import Crafted, crafted_run


@pytest.fixture
def crafted(db: None) -> Crafted:
    return crafted_run()
