"""Admin for windows, window runs, evidence, pools and bundle plans.

Opinions:
* Window definitions are the only documents here (what to collect); everything the pipeline
  produces (window runs, evidence, pools, plans) is a record and is read-only. Pools and
  plans are frozen by their services (``pool_create``, the bundling code): editing a member
  in place would silently change what past experiments judged.
* The evidence page answers "what did each level do to this article?" with L0–L3 side by
  side, the question the original lab's ``/evidence/[id]`` page answered.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.db.models import BooleanField, Count, ExpressionWrapper, Model, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from evidence.models import (
    BundlePlan,
    BundlePlanItem,
    Evidence,
    EvidenceView,
    Pool,
    PoolEvidence,
    Window,
    WindowRun,
)

_M = TypeVar("_M", bound=Model)

POOL_MEMBERS_SHOWN = 50
LEVEL_VIEWS = [view.value for view in EvidenceView]


class ReadOnlyAdmin(admin.ModelAdmin[_M]):
    """Produced by the pipeline or a service: viewable, never added, edited or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False


@admin.register(Window)
class WindowAdmin(admin.ModelAdmin[Window]):
    list_display = (
        "tag",
        "query",
        "country",
        "start_date",
        "end_date",
        "model",
        "evidence_limit",
        "target_stage",
        "run_count",
    )
    list_filter = ("country", "target_stage", "model")
    search_fields = ("tag", "query", "country")
    ordering = ("-created_at",)
    readonly_fields = ("created_at", "runs_link")
    fieldsets = (
        (None, {"fields": ("tag", "query", "country", "start_date", "end_date")}),
        ("Collection", {"fields": ("model", "evidence_limit", "target_stage")}),
        (
            "Search sandbox",
            {"fields": ("allowed_domains", "search_timeout_s"), "classes": ("collapse",)},
        ),
        ("Runs", {"fields": ("runs_link", "created_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Window]:
        return super().get_queryset(request).annotate(n_runs=Count("runs"))

    # Evidence rows point at their window (PROTECT): a window with evidence cannot go.
    def has_delete_permission(self, request: HttpRequest, obj: Window | None = None) -> bool:
        return False

    @admin.display(description="runs", ordering="n_runs")
    def run_count(self, obj: Window) -> int:
        return int(getattr(obj, "n_runs", 0))

    @admin.display(description="window runs")
    def runs_link(self, obj: Window) -> SafeString:
        url = reverse("admin:evidence_windowrun_changelist") + f"?window__id__exact={obj.pk}"
        return format_html('<a href="{}">window runs of {}</a>', url, obj.tag)


@admin.register(WindowRun)
class WindowRunAdmin(ReadOnlyAdmin[WindowRun]):
    list_display = (
        "id",
        "window",
        "status",
        "current_stage",
        "target_stage",
        "dropped_count",
        "created_at",
        "started_at",
        "completed_at",
    )
    list_filter = ("status", "current_stage")
    list_select_related = ("window",)
    search_fields = ("=id", "window__tag")
    raw_id_fields = ("window",)
    ordering = ("-id",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "window",
                    "status",
                    "current_stage",
                    "target_stage",
                    "evidence_link",
                    "last_error",
                )
            },
        ),
        (
            "Collection",
            {
                "fields": (
                    "search_count",
                    "dropped_count",
                    "truncated_count",
                    "materialized_stages",
                    "collect_attempts",
                    "collect_lease_owner",
                    "collect_lease_expires_at",
                    "collected_at",
                ),
                "classes": ("collapse",),
            },
        ),
        (
            "Timing",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "stage_started_at",
                    "completed_at",
                    "updated_at",
                ),
                "classes": ("collapse",),
            },
        ),
        ("Resolved policy", {"fields": ("resolved_policy",), "classes": ("collapse",)}),
    )
    readonly_fields = ("evidence_link",)

    @admin.display(description="evidence")
    def evidence_link(self, obj: WindowRun) -> SafeString:
        url = reverse("admin:evidence_evidence_changelist") + f"?window_run__id__exact={obj.pk}"
        return format_html('<a href="{}">evidence of this run</a>', url)


@admin.register(Evidence)
class EvidenceAdmin(ReadOnlyAdmin[Evidence]):
    list_display = ("id", "short_title", "window", "window_run", "levels", "created_at")
    list_select_related = ("window", "window_run")
    list_filter = ("window",)
    search_fields = ("=id", "title", "url")
    raw_id_fields = ("window", "window_run")
    ordering = ("-id",)
    fieldsets = (
        (
            None,
            {"fields": ("title", "url_link", "published", "window", "window_run", "created_at")},
        ),
        ("Levels L0–L3", {"fields": ("levels_side_by_side",)}),
        (
            "Transform requests and notes",
            {
                "fields": (
                    "l1_request_id",
                    "l2_request_id",
                    "l3_request_id",
                    "l0_note",
                    "l1_length_note",
                    "l2_length_note",
                    "l3_length_note",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    readonly_fields = ("url_link", "levels_side_by_side")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Evidence]:
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and (match.url_name or "").endswith("changelist"):
            # The list shows which levels exist (computed in SQL), never their (long) text.
            return qs.defer("l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted").annotate(
                **{
                    f"has_{view}": ExpressionWrapper(
                        Q(**{f"{view}__gt": ""}), output_field=BooleanField()
                    )
                    for view in LEVEL_VIEWS
                }
            )
        return qs

    @admin.display(description="title", ordering="title")
    def short_title(self, obj: Evidence) -> str:
        return obj.title[:80]

    @admin.display(description="levels")
    def levels(self, obj: Evidence) -> str:
        present = [
            f"L{n}" for n, view in enumerate(LEVEL_VIEWS) if getattr(obj, f"has_{view}", False)
        ]
        return " ".join(present) or "—"

    @admin.display(description="url")
    def url_link(self, obj: Evidence) -> SafeString:
        return format_html('<a href="{}" rel="noreferrer" target="_blank">{}</a>', obj.url, obj.url)

    @admin.display(description="L0–L3 side by side")
    def levels_side_by_side(self, obj: Evidence) -> SafeString:
        """A 4-column table, one column per level; a missing level says so explicitly."""
        views = LEVEL_VIEWS
        head = format_html_join("", "<th style='width:25%'>{}</th>", ((v,) for v in views))

        def cell(view: str) -> SafeString:
            text = getattr(obj, view)
            if not text:
                return format_html("<td><em>{}</em></td>", "not produced")
            return format_html(
                "<td style='vertical-align:top'><small>{} characters</small>"
                "<pre style='white-space:pre-wrap;word-break:break-word'>{}</pre></td>",
                len(text),
                text,
            )

        cells = format_html_join("", "{}", ((cell(v),) for v in views))
        return format_html(
            "<table class='evidence-levels' style='width:100%;table-layout:fixed'>"
            "<thead><tr>{}</tr></thead><tbody><tr>{}</tr></tbody></table>",
            head,
            cells,
        )


@admin.register(Pool)
class PoolAdmin(ReadOnlyAdmin[Pool]):
    list_display = ("tag", "evidence_count", "member_count", "created_at")
    search_fields = ("tag",)
    ordering = ("-created_at",)
    fields = ("tag", "evidence_count", "member_count", "created_at", "members_preview")
    readonly_fields = ("member_count", "members_preview")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pool]:
        return super().get_queryset(request).annotate(n_members=Count("members"))

    @admin.display(description="members", ordering="n_members")
    def member_count(self, obj: Pool) -> int:
        """Counted from the member rows (``evidence_count`` is what was written at creation)."""
        return int(getattr(obj, "n_members", 0))

    @admin.display(description=f"first {POOL_MEMBERS_SHOWN} members")
    def members_preview(self, obj: Pool) -> SafeString:
        members = (
            PoolEvidence.objects.filter(pool=obj)
            .select_related("evidence")
            .only("position", "evidence__id", "evidence__title")
            .order_by("position")[:POOL_MEMBERS_SHOWN]
        )
        rows = format_html_join(
            "",
            "<li>#{} <a href='{}'>{}</a></li>",
            (
                (
                    m.position,
                    reverse("admin:evidence_evidence_change", args=[m.evidence_id]),
                    m.evidence.title[:100],
                )
                for m in members
            ),
        )
        return format_html("<ol style='list-style:none'>{}</ol>", rows)


class BundlePlanItemInline(admin.TabularInline[BundlePlanItem, BundlePlan]):
    model = BundlePlanItem
    fields = ("bundle_index", "position", "evidence", "window_id", "cluster_id")
    readonly_fields = fields
    raw_id_fields = ("evidence",)
    ordering = ("bundle_index", "position")
    extra = 0
    can_delete = False
    classes = ("collapse",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(BundlePlan)
class BundlePlanAdmin(ReadOnlyAdmin[BundlePlan]):
    list_display = (
        "tag",
        "pool",
        "strategy",
        "strategy_version",
        "bundle_size",
        "seed",
        "evidence_count",
        "bundle_count",
        "created_at",
    )
    list_select_related = ("pool",)
    list_filter = ("strategy",)
    search_fields = ("tag", "pool__tag", "plan_signature")
    raw_id_fields = ("pool",)
    ordering = ("-created_at",)
    inlines = (BundlePlanItemInline,)
    fieldsets = (
        (None, {"fields": ("tag", "pool", "evidence_count", "bundle_count", "created_at")}),
        (
            "Strategy",
            {"fields": ("strategy", "strategy_version", "source_view", "bundle_size", "seed")},
        ),
        ("Signature", {"fields": ("plan_signature",), "classes": ("collapse",)}),
    )
