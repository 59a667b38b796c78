"""Admin for teams and policies, with an "effective policy" preview.

Validation lives on the model (``Policy.clean`` plus the CheckConstraints that the ModelForm
validates), so the admin, scripts and the shell refuse the same rows with the same messages.
The preview answers the operator's real question, "what will a run of this experiment on this
model actually get, and which row decided it?", with the same resolver the runs use.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from policies.models import PROVIDERS, LimiterBucket, Policy, Team
from policies.resolver import POLICY_FIELDS, EffectivePolicy, policy_resolve

#: Fields enforced on live limiter buckets (the preview shows which bucket owns each).
BUCKETED_FIELDS: frozenset[str] = frozenset(
    {
        "requests_per_minute",
        "input_tokens_per_minute",
        "output_tokens_per_minute",
        "batch_enqueued_tokens",
        "token_budget",
        "dollar_budget",
    }
)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin[Team]):
    list_display = ("slug", "name")
    search_fields = ("slug", "name")
    prepopulated_fields = {"slug": ("name",)}


class EffectivePolicyForm(forms.Form):
    """The combination to preview; every input is optional (a missing scope is skipped)."""

    team = forms.CharField(required=False, max_length=100)
    provider = forms.ChoiceField(required=False, choices=[("", "—"), *((p, p) for p in PROVIDERS)])
    model = forms.CharField(required=False, max_length=200, help_text="e.g. gpt-4.1")
    experiment = forms.CharField(required=False, max_length=200, help_text="experiment tag")


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin[Policy]):
    list_display = (
        "__str__",
        "scope",
        "key",
        "requests_per_minute",
        "input_tokens_per_minute",
        "max_batch_size",
        "batch_mode",
        "overrides",
        "updated_at",
    )
    list_filter = ("scope", "batch_mode", "partial_failure_policy")
    search_fields = ("key", "notes")
    ordering = ("scope", "key")
    readonly_fields = ("created_at", "updated_at")
    change_list_template = "admin/policies/policy/change_list.html"
    fieldsets = (
        (None, {"fields": ("scope", "key", "notes")}),
        (
            "Rate limits",
            {
                "fields": (
                    "requests_per_minute",
                    "input_tokens_per_minute",
                    "output_tokens_per_minute",
                    "batch_enqueued_tokens",
                ),
                "description": "Enforced on live buckets owned by this scope: a model-scope "
                "limit is shared by every run of that model.",
            },
        ),
        (
            "Batching",
            {
                "fields": (
                    "batch_mode",
                    "max_batch_size",
                    "min_batch_size",
                    "max_batch_bytes",
                    "max_concurrent_batches",
                    "poll_interval_seconds",
                )
            },
        ),
        (
            "Retries",
            {
                "fields": (
                    "max_request_attempts",
                    "max_batch_retries",
                    "retry_backoff_seconds",
                    "retry_jitter_ratio",
                    "request_timeout_seconds",
                    "partial_failure_policy",
                )
            },
        ),
        ("Direct calls", {"fields": ("direct_concurrency", "output_token_cap")}),
        (
            "Budgets",
            {
                "fields": ("token_budget", "dollar_budget"),
                "description": "Never refill. Checked on the limiter and, by callers, "
                "against recorded usage.",
            },
        ),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    @admin.display(description="fields set")
    def overrides(self, obj: Policy) -> int:
        return len(obj.set_fields())

    def get_urls(self) -> list[URLPattern]:
        # Before the default URLs: "<path:object_id>/" would otherwise swallow "effective/".
        custom = [
            path(
                "effective/",
                self.admin_site.admin_view(self.effective_view),
                name="policies_policy_effective",
            )
        ]
        return custom + super().get_urls()

    def effective_view(self, request: HttpRequest) -> TemplateResponse:
        """Resolve a combination and show every field's value and the row that supplied it."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = EffectivePolicyForm(request.GET or None)
        effective: EffectivePolicy | None = None
        rows: list[dict[str, Any]] = []
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            effective = policy_resolve(
                team=data["team"] or None,
                provider=data["provider"] or None,
                model=data["model"] or None,
                experiment=data["experiment"] or None,
            )
            for name in POLICY_FIELDS:
                source = effective.provenance.get(name)
                rows.append(
                    {
                        "name": name,
                        "value": effective.value(name),
                        "scope": source["scope"] if source else None,
                        "key": source["key"] if source else None,
                        "bucket": effective.bucket_owner(name)
                        if source and name in BUCKETED_FIELDS
                        else None,
                    }
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Effective policy",
            "opts": self.model._meta,
            "form": form,
            "effective": effective,
            "rows": rows,
            "problems": effective.problems() if effective else [],
        }
        return TemplateResponse(request, "admin/policies/policy/effective.html", context)


@admin.register(LimiterBucket)
class LimiterBucketAdmin(admin.ModelAdmin[LimiterBucket]):
    """Read-only view of the database limiter's buckets (empty when Redis is configured)."""

    list_display = ("key", "kind", "tokens", "updated_at")
    list_filter = ("kind",)
    search_fields = ("key",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LimiterBucket | None = None) -> bool:
        return False
