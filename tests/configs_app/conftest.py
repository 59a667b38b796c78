"""Fixtures for configs_app tests: a valid spec body and a helper writing template files."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.configs_app.helpers import DEMO_BODY


@pytest.fixture
def body() -> dict[str, Any]:
    """A fresh, valid spec body (the demo experiment) that tests may mutate."""
    return copy.deepcopy(DEMO_BODY)


WriteFile = Callable[..., Path]


@pytest.fixture
def write_file(tmp_path: Path) -> WriteFile:
    """write_file(document, name="t.yaml") -> path; a str document is written verbatim."""

    def write(document: Any, name: str = "template.yaml") -> Path:
        path = tmp_path / name
        if isinstance(document, str):
            path.write_text(document, encoding="utf-8")
        elif name.endswith(".json"):
            path.write_text(json.dumps(document), encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    return write
