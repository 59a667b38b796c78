"""Which code produced a run: recorded in every ``RunConfig.git_sha``.

Why a fallback chain: a checkout has a git HEAD; an installed wheel (``pip install .`` in a
container without ``.git``) has only its package version; anything else is "unknown", which
is still better than failing to start a run over provenance.
"""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
PACKAGE_NAME = "judge-gym"
_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")  # SHA-1 or SHA-256 object names


def git_head(directory: Path = PROJECT_DIR) -> str | None:
    """``git rev-parse HEAD`` of ``directory``, or None when git or the repository is missing.

    Not cached: a long-lived dev process may outlive several commits.
    """
    try:
        completed = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = completed.stdout.strip()
    return sha if completed.returncode == 0 and _SHA.match(sha) else None


def package_version() -> str | None:
    """``judge-gym==<version>`` when the project is installed as a distribution."""
    try:
        return f"{PACKAGE_NAME}=={metadata.version(PACKAGE_NAME)}"
    except metadata.PackageNotFoundError:
        return None


def code_version(directory: Path = PROJECT_DIR) -> str:
    """The git HEAD sha, else ``judge-gym==<version>``, else ``"unknown"``."""
    return git_head(directory) or package_version() or "unknown"
