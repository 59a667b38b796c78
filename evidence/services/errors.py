"""Evidence service errors: what was wrong and how to fix it.

Why subclass the judging side's ``ServiceError`` (a leaf module with no imports): the CLI,
the admin and the REST API already render ``ServiceError`` (stable ``code``, ``message``,
``fix``), so window, pool and plan errors surface the same way everywhere without a second
error protocol.
"""

from __future__ import annotations

from orchestration.services.errors import ServiceError


class EvidenceError(ServiceError):
    """Base for evidence errors."""

    code = "evidence_error"


class EvidenceNotFound(EvidenceError):
    code = "not_found"


class EvidenceInvalid(EvidenceError, ValueError):
    """Bad input (dates, tags, stages, strategies...)."""

    code = "invalid"


class EvidenceConflict(EvidenceError):
    """A tag already taken by something else."""

    code = "conflict"


class EvidenceInvalidState(EvidenceError):
    code = "invalid_state"
