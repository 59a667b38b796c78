"""Structured service errors: what was wrong and what to do, for the CLI, admin and API."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base: ``code`` is stable (machine-readable); ``message`` and ``fix`` are for people."""

    code = "error"

    def __init__(self, message: str, *, fix: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "fix": self.fix, **self.details}

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


class NotFound(ServiceError):
    code = "not_found"


class ActiveRunExists(ServiceError):
    code = "active_run_exists"


class InvalidState(ServiceError):
    code = "invalid_state"


class StartRefused(ServiceError):
    """Preflight, config or evidence problems found before any row was written."""

    code = "start_refused"
