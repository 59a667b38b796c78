"""Durable configs: versioned append-only templates and immutable run-config snapshots.

Why append-only: a run's results are only interpretable against the exact configuration that
produced them, and ``spec_signature`` is only useful if the row it was computed from can never
change under it. "Editing" a template therefore means creating version N+1
(``services.template_create``), and a run freezes its config into a ``RunConfig`` that nothing
can alter.

Immutability is enforced at three layers, each catching what the one above cannot:
1. models: ``save()`` on an existing row and ``delete()`` raise :class:`ImmutableRecordError`;
   the querysets' ``update()``, ``bulk_update()`` and ``delete()`` (hence admin bulk delete)
   raise too;
2. admin: no change/delete of stored rows (see admin.py);
3. database: ``BEFORE UPDATE OR DELETE`` triggers (db_triggers.py, migration 0002) refuse raw
   SQL. ``TRUNCATE`` still works on PostgreSQL, so test flushes are unaffected.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

from django.db import models
from django.utils import timezone

_M = TypeVar("_M", bound=models.Model)


class ImmutableRecordError(Exception):
    """Raised on any attempt to modify or delete a stored config row."""


class ImmutableQuerySet(models.QuerySet[_M]):
    """A queryset whose bulk writes refuse: ``update()`` and ``delete()`` bypass ``save()``."""

    def update(self, **kwargs: Any) -> int:
        raise ImmutableRecordError(
            f"{self.model.__name__} rows are immutable: QuerySet.update() is refused; "
            "create a new version instead."
        )

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableRecordError(
            f"{self.model.__name__} rows are append-only: QuerySet.delete() is refused."
        )

    def bulk_update(
        self, objs: Iterable[_M], fields: Iterable[str], batch_size: int | None = None
    ) -> int:
        # Refuse before Django opens its savepoint-less atomic block: raising from update()
        # inside it would leave the caller's transaction unusable.
        raise ImmutableRecordError(
            f"{self.model.__name__} rows are immutable: QuerySet.bulk_update() is refused."
        )


class AppendOnlyModel(models.Model):
    """Rows may be inserted once and then never saved again or deleted."""

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableRecordError(
                f"{type(self).__name__} {self} is immutable: save() on a stored row is "
                "refused; create a new version instead."
            )
        # Always INSERT: with a client-side primary key (RunConfig's UUID) Django would
        # otherwise try an UPDATE first, which is exactly the write this model forbids.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableRecordError(
            f"{type(self).__name__} {self} is append-only: delete() refused."
        )


class ConfigTemplateQuerySet(ImmutableQuerySet["ConfigTemplate"]):
    pass


class ConfigTemplate(AppendOnlyModel):
    """One version of an experiment template. ``(template_id, version)`` is unique; versions
    count 1, 2, 3… per template_id and are assigned by ``services.template_create`` under a
    row lock."""

    template_id = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    schema_version = models.PositiveSmallIntegerField(default=1)
    config_body = models.JSONField(help_text="The normalized ExperimentSpec body.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=150, blank=True)
    notes = models.TextField(blank=True)
    spec_signature = models.CharField(max_length=64, db_index=True)

    objects = ConfigTemplateQuerySet.as_manager()

    class Meta:
        ordering = ("template_id", "-version")
        constraints = (
            models.UniqueConstraint(
                fields=("template_id", "version"), name="configs_template_id_version_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(version__gte=1), name="configs_template_version_gte_1"
            ),
        )

    def __str__(self) -> str:
        return f"{self.template_id}@v{self.version}"


class ValidationStatus(models.TextChoices):
    VALID = "valid", "valid"
    INVALID = "invalid", "invalid"


class RunConfigQuerySet(ImmutableQuerySet["RunConfig"]):
    pass


class RunConfig(AppendOnlyModel):
    """The frozen configuration of one run: template body, resolved policy, code version.

    ``template_id``/``template_version`` duplicate the foreign key's target on purpose: reports
    and exports read them without a join, and they stay meaningful in a dump that omits the
    template table. ``spec_signature`` is SHA-256 over canonical JSON of
    ``{"spec": config_body, "resolved_policy": resolved_policy}`` (see services.py).
    """

    run_config_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Not named ``template``: Django would then own the attribute ``template_id`` (the FK
    # column), which is taken by the denormalized slug below.
    config_template = models.ForeignKey(
        ConfigTemplate, on_delete=models.PROTECT, related_name="run_configs"
    )
    template_id = models.SlugField(max_length=100)
    template_version = models.PositiveIntegerField()
    config_body = models.JSONField()
    resolved_policy = models.JSONField(
        default=dict, blank=True, help_text="Per-field value and provenance, from policies."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    git_sha = models.CharField(max_length=100, blank=True)
    spec_signature = models.CharField(max_length=64, db_index=True)
    validation_status = models.CharField(
        max_length=16, choices=ValidationStatus.choices, default=ValidationStatus.VALID
    )
    validation_errors = models.JSONField(default=list, blank=True)

    objects = RunConfigQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        indexes = (
            # "previous run config of this template" (admin diff, reports).
            models.Index(fields=("template_id", "created_at"), name="configs_runcfg_tpl_created"),
        )

    def __str__(self) -> str:
        return f"{self.template_id}@v{self.template_version} run config {self.run_config_id}"
