"""Reads for configs (STYLE.md habit 2: selectors for reads, services for writes)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, OuterRef, Q, Subquery

from configs_app.models import ConfigTemplate, RunConfig


@dataclass(frozen=True)
class TemplateSummary:
    latest: ConfigTemplate
    version_count: int


def template_summaries() -> list[TemplateSummary]:
    """The latest version of every template_id, with how many versions it has."""
    latest_version = (
        ConfigTemplate.objects.filter(template_id=OuterRef("template_id"))
        .order_by("-version")
        .values("version")[:1]
    )
    latest = ConfigTemplate.objects.filter(version=Subquery(latest_version)).order_by("template_id")
    counts = dict(
        ConfigTemplate.objects.order_by()
        .values("template_id")
        .annotate(n=Count("id"))
        .values_list("template_id", "n")
    )
    return [TemplateSummary(latest=row, version_count=counts[row.template_id]) for row in latest]


def run_config_previous(*, run_config: RunConfig) -> RunConfig | None:
    """The run config created just before this one for the same template_id (any version).

    Ties on ``created_at`` are broken by primary key so the order is total.
    """
    return (
        RunConfig.objects.filter(template_id=run_config.template_id)
        .filter(
            Q(created_at__lt=run_config.created_at)
            | Q(created_at=run_config.created_at, run_config_id__lt=run_config.run_config_id)
        )
        .order_by("-created_at", "-run_config_id")
        .first()
    )
