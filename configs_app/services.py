"""Writes for configs: template versions, imports, run-config snapshots.

Keyword-only ``<noun>_<verb>`` functions (STYLE.md habit 2); the admin and the management
commands call these and hold no rules of their own.

``RunConfig.spec_signature`` definition: SHA-256 hex over the canonical JSON (see
``spec.canonical_json``) of ``{"spec": <normalized body>, "resolved_policy": <policy>}``.
Why these two and nothing else: they are what determines the *experiment* a run performs
(judge configuration plus the limits, attempts and budgets it ran under). The git sha is
recorded beside it but deliberately left out, so runs of the same configuration on different
code versions still group together; pool membership and bundle signatures belong to the run
itself (orchestration), not to its config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction

from configs_app.importfile import SLUG, SUPPORTED_SCHEMA_VERSIONS, load_template_file
from configs_app.models import ConfigTemplate, RunConfig, ValidationStatus
from configs_app.provenance import code_version
from configs_app.spec import (
    SpecError,
    SpecIssue,
    find_secrets,
    normalize_spec,
    ordered_like_spec,
    sha256_canonical,
)

# The first version of a template_id has no row to lock, so two concurrent creators can both
# pick version 1; the unique constraint rejects one of them, which then retries and finds the
# other's row. Two retries cover that race; more would hide a real bug.
_VERSION_RACE_ATTEMPTS = 3
_REF = re.compile(r"^(?P<template_id>[-a-zA-Z0-9_]+)(?:@v?(?P<version>[0-9]+))?$")


@dataclass(frozen=True)
class ImportResult:
    """The outcome of importing one file: the current version and whether it was just made."""

    template: ConfigTemplate
    created: bool


def _check_template_id(template_id: str) -> None:
    if not SLUG.match(template_id):
        raise SpecError(
            [
                {
                    "path": "template_id",
                    "message": f"{template_id!r} is not a slug",
                    "fix": "use letters, digits, '-' or '_' (at most 100 characters)",
                }
            ]
        )


def _version_add(
    *,
    template_id: str,
    body: dict[str, Any],
    signature: str,
    schema_version: int,
    created_by: str,
    notes: str,
    skip_if_unchanged: bool,
) -> tuple[ConfigTemplate, bool]:
    """Insert the next version of ``template_id`` (or return the latest if unchanged).

    1. Lock the template's *first* row (``select_for_update``). Every creator of a later
       version must take that same lock, so they queue behind each other.
    2. Only then read the latest version, in a new statement: under READ COMMITTED it sees
       the versions committed by whoever held the lock before. (Locking the latest row
       instead does not work: a waiter woken on v1 still gets v1 back from its ``ORDER BY
       version DESC LIMIT 1`` and collides on v2.) The unchanged check runs under the same
       lock, so two imports of one file cannot both create a version.
    3. No row yet: nothing to lock; the unique constraint decides, the loser retries once and
       then queues on the winner's row like everyone else.
    """
    for attempt in range(_VERSION_RACE_ATTEMPTS):
        try:
            with transaction.atomic():
                rows = ConfigTemplate.objects.filter(template_id=template_id)
                rows.select_for_update().order_by("version").first()  # step 1: the lock
                latest = rows.order_by("-version").first()  # step 2: a fresh read
                if skip_if_unchanged and latest is not None and latest.spec_signature == signature:
                    return latest, False
                created = ConfigTemplate.objects.create(
                    template_id=template_id,
                    version=(latest.version + 1) if latest is not None else 1,
                    schema_version=schema_version,
                    config_body=body,
                    created_by=created_by,
                    notes=notes,
                    spec_signature=signature,
                )
                return created, True
        except IntegrityError:
            if attempt == _VERSION_RACE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def template_create(
    *,
    template_id: str,
    body: Mapping[str, Any],
    created_by: str = "",
    notes: str = "",
    schema_version: int = 1,
) -> ConfigTemplate:
    """Validate and normalize ``body`` and store it as the next version of ``template_id``.

    Always creates a version (the admin's "save as next version"); use ``template_import``
    for the idempotent path. Raises SpecError on an invalid body; nothing is written then.
    """
    _check_template_id(template_id)
    if schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        raise SpecError(
            [
                {
                    "path": "schema_version",
                    "message": f"unsupported schema_version {schema_version}",
                    "fix": f"use one of {sorted(SUPPORTED_SCHEMA_VERSIONS)}",
                }
            ]
        )
    normalized = normalize_spec(body)
    template, _created = _version_add(
        template_id=template_id,
        body=normalized,
        signature=sha256_canonical(normalized),
        schema_version=schema_version,
        created_by=created_by,
        notes=notes,
        skip_if_unchanged=False,
    )
    return template


def template_import_many(
    *, paths: Sequence[str | Path], created_by: str = ""
) -> list[ImportResult]:
    """Import several files all-or-nothing: every file is validated before anything is written,
    and the writes share one transaction.

    Idempotent per file: when the latest version of the template already has the file's
    signature, no version is created (``created=False``). Notes alone never make a new
    version (they are not part of the signature).
    """
    documents = [load_template_file(path) for path in paths]
    results: list[ImportResult] = []
    with transaction.atomic():
        for document in documents:
            template, created = _version_add(
                template_id=document.template_id,
                body=document.spec,
                signature=document.spec_signature,
                schema_version=document.schema_version,
                created_by=created_by,
                notes=document.notes,
                skip_if_unchanged=True,
            )
            results.append(ImportResult(template=template, created=created))
    return results


def template_import(*, path: str | Path, created_by: str = "") -> ImportResult:
    """Import one YAML/JSON template file (format in importfile.py); see template_import_many."""
    return template_import_many(paths=[path], created_by=created_by)[0]


def template_ref_parse(ref: str) -> tuple[str, int | None]:
    """``demo-fascism`` -> (id, None); ``demo-fascism@3`` or ``@v3`` -> (id, 3)."""
    match = _REF.match(ref.strip())
    if match is None:
        raise ValueError(
            f"{ref!r} is not a template reference; write <template_id> or <template_id>@<version>"
        )
    version = match.group("version")
    return match.group("template_id"), int(version) if version is not None else None


def template_get(*, template_id: str, version: int | None = None) -> ConfigTemplate:
    """One version (the latest when ``version`` is None). Raises ConfigTemplate.DoesNotExist
    with a message listing what does exist."""
    rows = ConfigTemplate.objects.filter(template_id=template_id)
    found = (
        rows.filter(version=version).first()
        if version is not None
        else rows.order_by("-version").first()
    )
    if found is not None:
        return found
    versions = sorted(rows.values_list("version", flat=True))
    if versions:
        detail = f"template {template_id!r} has versions {versions}, not {version}"
    else:
        known = sorted(set(ConfigTemplate.objects.values_list("template_id", flat=True).distinct()))
        detail = f"no template {template_id!r}; known: {', '.join(known) or '(none)'}"
    raise ConfigTemplate.DoesNotExist(detail)


def template_export(*, template_id: str, version: int | None = None) -> dict[str, Any]:
    """The import-file document of one version; re-importing it yields the same signature."""
    template = template_get(template_id=template_id, version=version)
    return {
        "template_id": template.template_id,
        "schema_version": template.schema_version,
        "notes": template.notes,
        "spec": ordered_like_spec(template.config_body),
    }


def run_config_signature(*, spec: Mapping[str, Any], resolved_policy: Mapping[str, Any]) -> str:
    """SHA-256 over canonical JSON of ``{"spec": ..., "resolved_policy": ...}``."""
    return sha256_canonical({"spec": dict(spec), "resolved_policy": dict(resolved_policy)})


def run_config_create(
    *,
    template: ConfigTemplate,
    resolved_policy: Mapping[str, Any],
    git_sha: str | None = None,
    allow_invalid: bool = False,
) -> RunConfig:
    """Freeze ``template`` plus the caller's resolved policy into an immutable RunConfig.

    The body is re-validated now, not trusted from storage: the template may have been
    written by an older engine whose rules were looser (STYLE.md habit 8). On failure this
    raises SpecError, unless ``allow_invalid`` (for recording a refused start): then the
    stored body is kept as-is with ``validation_status=invalid`` and the issues.
    ``git_sha`` defaults to ``provenance.code_version()``.
    """
    policy_issues: list[SpecIssue] = []
    if not isinstance(resolved_policy, Mapping):
        policy_issues.append(
            {
                "path": "resolved_policy",
                "message": "resolved_policy must be a mapping",
                "fix": "pass the policy resolver's per-field dict",
            }
        )
    else:
        policy_issues.extend(find_secrets(resolved_policy, prefix="resolved_policy"))
    if policy_issues:
        raise SpecError(policy_issues, source=str(template))

    status = ValidationStatus.VALID
    errors: list[SpecIssue] = []
    try:
        body = normalize_spec(template.config_body)
    except SpecError as exc:
        if not allow_invalid:
            raise exc.with_source(str(template)) from None
        body, status, errors = template.config_body, ValidationStatus.INVALID, exc.issues
    try:
        signature = run_config_signature(spec=body, resolved_policy=resolved_policy)
    except (TypeError, ValueError) as exc:
        raise SpecError(
            [
                {
                    "path": "resolved_policy",
                    "message": f"not canonical JSON: {exc}",
                    "fix": "use only strings, finite numbers, booleans, null, lists and "
                    "string-keyed mappings",
                }
            ],
            source=str(template),
        ) from None
    return RunConfig.objects.create(
        config_template=template,
        template_id=template.template_id,
        template_version=template.version,
        config_body=body,
        resolved_policy=dict(resolved_policy),
        git_sha=git_sha if git_sha is not None else code_version(),
        spec_signature=signature,
        validation_status=status,
        validation_errors=list(errors),
    )
