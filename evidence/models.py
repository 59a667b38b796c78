"""Evidence: window definitions and runs, evidence rows with l0..l3 content, pools, plans.

Why windows are split into a definition and runs (as on the original's temporal branch): a
window can be collected again without mutating what earlier experiments judged; evidence is
deduplicated per (window run, url) by a unique constraint, so a re-run of collect never
duplicates rows.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class EvidenceView(models.TextChoices):
    L0_RAW = "l0_raw", "l0_raw"
    L1_CLEANED = "l1_cleaned", "l1_cleaned"
    L2_NEUTRALIZED = "l2_neutralized", "l2_neutralized"
    L3_ABSTRACTED = "l3_abstracted", "l3_abstracted"


TRANSFORM_STAGES = (
    EvidenceView.L1_CLEANED,
    EvidenceView.L2_NEUTRALIZED,
    EvidenceView.L3_ABSTRACTED,
)


class WindowRunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"
    CANCELED = "canceled", "canceled"


class Window(models.Model):
    """A search window definition (what to collect)."""

    tag = models.SlugField(max_length=100, unique=True)
    query = models.CharField(max_length=500)
    country = models.CharField(max_length=100)
    start_date = models.DateField()
    end_date = models.DateField()
    model = models.CharField(max_length=100)  # registry id used for the transforms
    evidence_limit = models.PositiveIntegerField(default=20)
    target_stage = models.CharField(
        max_length=20, choices=EvidenceView.choices, default=EvidenceView.L3_ABSTRACTED
    )
    # Search sandbox (evidence.search.sandbox): hosts evidence URLs may come from (empty = the
    # default, any public https host) and the per-request search timeout (None = default).
    allowed_domains = models.JSONField(default=list, blank=True)
    search_timeout_s = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(end_date__gte=models.F("start_date")), name="window_dates_ordered"
            ),
        ]

    def __str__(self) -> str:
        return self.tag


class WindowRun(models.Model):
    window = models.ForeignKey(Window, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(
        max_length=16, choices=WindowRunStatus.choices, default=WindowRunStatus.QUEUED
    )
    current_stage = models.CharField(
        max_length=20, choices=EvidenceView.choices, default=EvidenceView.L0_RAW
    )
    target_stage = models.CharField(
        max_length=20, choices=EvidenceView.choices, default=EvidenceView.L3_ABSTRACTED
    )
    resolved_policy = models.JSONField(default=dict)
    # Stages whose attempt-1 requests were inserted (advance materializes each stage once).
    materialized_stages = models.JSONField(default=list, blank=True)
    search_count = models.PositiveIntegerField(default=0)  # hits the provider returned
    dropped_count = models.PositiveIntegerField(default=0)  # hits refused (fields/sandbox)
    truncated_count = models.PositiveIntegerField(default=0)  # markdown cut at the size cap
    last_error = models.TextField(blank=True, default="")
    # Collect claim: a conditional UPDATE takes the lease; an expired lease (worker killed
    # mid-search) lets the reconciler re-drive collection.
    collect_attempts = models.PositiveSmallIntegerField(default=0)
    collect_lease_owner = models.CharField(max_length=100, null=True, blank=True)
    collect_lease_expires_at = models.DateTimeField(null=True, blank=True)
    collected_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["window"],
                condition=Q(status__in=["queued", "running", "paused"]),
                name="one_active_window_run",
            ),
        ]
        indexes = [
            # The reconciler's scan of active window runs (partial: finished runs cost nothing).
            models.Index(
                fields=["status", "updated_at"],
                name="windowrun_active",
                condition=Q(status__in=["queued", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"window run {self.pk} ({self.window_id})"

    @property
    def process(self) -> str:
        """The transport process key (holds, progress, notifier routing)."""
        return f"window:{self.pk}"


class Evidence(models.Model):
    window_run = models.ForeignKey(
        WindowRun, on_delete=models.PROTECT, related_name="evidence", null=True, blank=True
    )
    window = models.ForeignKey(Window, on_delete=models.PROTECT, related_name="evidence")
    title = models.CharField(max_length=1000)
    url = models.URLField(max_length=2000)
    published = models.CharField(max_length=40, blank=True, default="")
    l0_raw = models.TextField()
    l0_note = models.CharField(max_length=300, blank=True, default="")  # e.g. truncation
    l1_cleaned = models.TextField(null=True, blank=True)
    l2_neutralized = models.TextField(null=True, blank=True)
    l3_abstracted = models.TextField(null=True, blank=True)
    l1_request_id = models.BigIntegerField(null=True, blank=True)
    l2_request_id = models.BigIntegerField(null=True, blank=True)
    l3_request_id = models.BigIntegerField(null=True, blank=True)
    # Set when the last attempt's output was kept despite a contract violation.
    l1_length_note = models.CharField(max_length=300, blank=True, default="")
    l2_length_note = models.CharField(max_length=300, blank=True, default="")
    l3_length_note = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["window_run", "url"], name="evidence_run_url_uniq"),
        ]
        verbose_name_plural = "evidence"

    def __str__(self) -> str:
        return f"evidence {self.pk}: {self.title[:60]}"

    def text_for(self, view: str) -> str:
        """The requested view, falling back to lower levels when it is missing."""
        order = ["l3_abstracted", "l2_neutralized", "l1_cleaned", "l0_raw"]
        for name in order[order.index(view) :]:
            value = getattr(self, name)
            if value:
                return str(value)
        return self.l0_raw


class Pool(models.Model):
    """A frozen, ordered set of evidence (member order = insertion order)."""

    tag = models.SlugField(max_length=100, unique=True)
    evidence_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.tag


class PoolEvidence(models.Model):
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="members")
    evidence = models.ForeignKey(Evidence, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "evidence"], name="pool_evidence_uniq"),
            models.UniqueConstraint(fields=["pool", "position"], name="pool_position_uniq"),
        ]

    def __str__(self) -> str:
        return f"pool {self.pool_id} #{self.position}: evidence {self.evidence_id}"


class BundlePlan(models.Model):
    tag = models.SlugField(max_length=100, unique=True)
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="bundle_plans")
    strategy = models.CharField(max_length=40)
    strategy_version = models.CharField(max_length=20, default="v1")
    source_view = models.CharField(max_length=20, blank=True, default="")
    bundle_size = models.PositiveIntegerField()
    seed = models.BigIntegerField(null=True, blank=True)
    plan_signature = models.CharField(max_length=64, unique=True)
    evidence_count = models.PositiveIntegerField(default=0)
    bundle_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.tag


class BundlePlanItem(models.Model):
    plan = models.ForeignKey(BundlePlan, on_delete=models.CASCADE, related_name="items")
    bundle_index = models.PositiveIntegerField()
    evidence = models.ForeignKey(Evidence, on_delete=models.PROTECT, related_name="+")
    window_id = models.BigIntegerField()
    position = models.PositiveIntegerField()
    cluster_id = models.IntegerField(null=True, blank=True)
    bundle_signature = models.TextField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "bundle_index", "position"], name="plan_item_uniq"
            ),
        ]
        indexes = [models.Index(fields=["plan", "bundle_index"], name="plan_bundle_idx")]

    def __str__(self) -> str:
        return f"plan {self.plan_id} bundle {self.bundle_index} #{self.position}"
