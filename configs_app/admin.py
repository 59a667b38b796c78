"""Admin authoring for config templates; read-only views of run configs.

Stored rows never change (models.py), so the admin's "change" of a template means *save as
next version*: the change page shows the stored version read-only, offers its body and notes
as the starting point of a new version, and saving calls ``services.template_create`` and
redirects to the version it made. The admin holds no rules of its own (STYLE.md trap 6):
validation is ``ExperimentSpec`` (via the form) and writing is the service.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from configs_app.models import ConfigTemplate, RunConfig
from configs_app.selectors import run_config_previous
from configs_app.services import template_create
from configs_app.spec import SpecError, normalize_spec, ordered_like_spec


def _pretty(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _pretty_spec(body: object) -> str:
    if isinstance(body, dict):
        return json.dumps(ordered_like_spec(body), indent=2, ensure_ascii=False)
    return _pretty(body)


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows the body indented, so a person can actually edit it."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


class ConfigTemplateForm(forms.ModelForm[ConfigTemplate]):
    config_body = PrettyJSONField(
        widget=forms.Textarea(attrs={"rows": 32, "cols": 100, "style": "font-family:monospace"}),
        help_text="The ExperimentSpec body (JSON). Legacy evidence views are normalized on save.",
    )

    class Meta:
        model = ConfigTemplate
        fields = ("template_id", "config_body", "notes")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and isinstance(self.instance.config_body, dict):
            # jsonb returns keys shuffled; start the next version from the authored order.
            self.initial["config_body"] = ordered_like_spec(self.instance.config_body)

    def clean_config_body(self) -> Any:
        """Validate with ExperimentSpec here so errors land on the field, with path and fix."""
        body = self.cleaned_data["config_body"]
        try:
            normalize_spec(body)
        except SpecError as exc:
            raise ValidationError(
                [f"{i['path'] or '(body)'}: {i['message']} (fix: {i['fix']})" for i in exc.issues]
            ) from None
        return body


def _adopt(target: ConfigTemplate, source: ConfigTemplate) -> None:
    """Make the admin's in-memory instance *be* the row the service created.

    Why: after ``save_model`` Django logs and redirects using that instance; pointing it at
    the new version makes the log entry, message and redirect name the version that exists.
    """
    for model_field in ConfigTemplate._meta.concrete_fields:
        setattr(target, model_field.attname, getattr(source, model_field.attname))
    target._state.adding = False
    target._state.db = source._state.db


@admin.register(ConfigTemplate)
class ConfigTemplateAdmin(admin.ModelAdmin[ConfigTemplate]):
    form = ConfigTemplateForm
    list_display = ("template_id", "version", "short_signature", "created_at", "created_by")
    list_display_links = ("template_id", "version")
    search_fields = ("template_id", "spec_signature", "notes")
    ordering = ("template_id", "-version")
    date_hierarchy = "created_at"
    save_as = False
    version_fields = (
        "template_id",
        "version",
        "schema_version",
        "spec_signature",
        "created_at",
        "created_by",
        "run_config_count",
    )

    @admin.display(description="signature", ordering="spec_signature")
    def short_signature(self, obj: ConfigTemplate) -> str:
        return obj.spec_signature[:12]

    @admin.display(description="run configs")
    def run_config_count(self, obj: ConfigTemplate) -> int:
        return obj.run_configs.count()

    # "change" = save as the next version, which needs the right to add.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.version_fields if obj is not None else ()

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [
                (
                    None,
                    {
                        "fields": ("template_id", "config_body", "notes"),
                        "description": "Saving creates version 1, or the next version when "
                        "this template_id already exists.",
                    },
                )
            ]
        return [
            ("This version (stored, read-only)", {"fields": self.version_fields}),
            (
                "Save as next version",
                {
                    "fields": ("config_body", "notes"),
                    # Rendered as HTML by the admin template, hence format_html.
                    "description": format_html(
                        "Stored versions never change. Saving creates <b>{}@v{}</b> from the "
                        "body and notes below and opens it; {} stays as it is.",
                        obj.template_id,
                        self._next_version(obj),
                        str(obj),
                    ),
                },
            ),
        ]

    @staticmethod
    def _next_version(obj: ConfigTemplate) -> int:
        latest = (
            ConfigTemplate.objects.filter(template_id=obj.template_id)
            .order_by("-version")
            .values_list("version", flat=True)
            .first()
        )
        return (latest or obj.version) + 1

    def save_model(
        self, request: HttpRequest, obj: ConfigTemplate, form: Any, change: bool
    ) -> None:
        created = template_create(
            template_id=obj.template_id,
            body=form.cleaned_data["config_body"],
            notes=form.cleaned_data.get("notes", ""),
            created_by=request.user.get_username(),
        )
        _adopt(obj, created)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        # A "change" made a new row; record it as the addition it is.
        return self.log_addition(request, obj, [{"added": {}}])

    def response_change(self, request: HttpRequest, obj: ConfigTemplate) -> HttpResponse:
        self.message_user(
            request,
            f"Saved as {obj}; earlier versions are unchanged.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(
            reverse("admin:configs_app_configtemplate_change", args=[obj.pk])
        )


@admin.register(RunConfig)
class RunConfigAdmin(admin.ModelAdmin[RunConfig]):
    list_display = (
        "run_config_id",
        "template_id",
        "template_version",
        "short_signature",
        "validation_status",
        "git_sha",
        "created_at",
    )
    list_filter = ("validation_status", "template_id")
    search_fields = ("template_id", "spec_signature", "git_sha")
    list_select_related = ("config_template",)
    date_hierarchy = "created_at"
    fields = (
        "run_config_id",
        "config_template",
        "template_id",
        "template_version",
        "spec_signature",
        "validation_status",
        "validation_errors",
        "git_sha",
        "created_at",
        "diff_vs_previous",
        "config_body_pretty",
        "resolved_policy_pretty",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="signature", ordering="spec_signature")
    def short_signature(self, obj: RunConfig) -> str:
        return obj.spec_signature[:12]

    @admin.display(description="config body")
    def config_body_pretty(self, obj: RunConfig) -> SafeString:
        return format_html("<pre>{}</pre>", _pretty_spec(obj.config_body))

    @admin.display(description="resolved policy")
    def resolved_policy_pretty(self, obj: RunConfig) -> SafeString:
        return format_html("<pre>{}</pre>", _pretty(obj.resolved_policy))

    @admin.display(description="diff vs previous run config")
    def diff_vs_previous(self, obj: RunConfig) -> SafeString:
        """Unified diff of body and policy against the previous run config of this template:
        the quickest answer to "what changed between these two runs?"."""
        previous = run_config_previous(run_config=obj)
        if previous is None:
            return format_html("<p>First run config of template {}.</p>", obj.template_id)

        def lines(rc: RunConfig) -> list[str]:
            body = rc.config_body
            document = {
                "config_body": ordered_like_spec(body) if isinstance(body, dict) else body,
                "resolved_policy": rc.resolved_policy,
            }
            return json.dumps(document, indent=2, ensure_ascii=False).splitlines()

        diff = "\n".join(
            difflib.unified_diff(
                lines(previous),
                lines(obj),
                fromfile=f"previous {previous.run_config_id} (v{previous.template_version})",
                tofile=f"this {obj.run_config_id} (v{obj.template_version})",
                lineterm="",
            )
        )
        if not diff:
            return format_html(
                "<p>Identical to previous run config {}.</p>", str(previous.run_config_id)
            )
        return format_html("<pre>{}</pre>", diff)
