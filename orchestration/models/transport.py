"""Transport tables: prompt templates, request attempts, batches, holds, the scheduler lock.

Design notes (why):
* ``LlmRequest`` is an append-only log of attempts. The identity ``(custom_key, attempt_index)``
  is unique in the database, so a duplicated message or a racing tick can never create a second
  attempt 2 for a key. A failed attempt keeps its raw output and error; a retry is a new row.
* ``process`` (``run:<id>`` / ``window:<id>``) and ``stage`` are denormalized from the custom
  key so per-stage progress is one indexed aggregate and holds (pause) are one lookup; the
  transport never interprets them beyond that.
* ``LlmBatch.batch_key`` hashes the membership (sorted request ids): two ticks forming the same
  shard collide on the unique key instead of submitting twice. ``submission_key`` is written
  before the provider call; an unknown outcome is resolved by finding that key at the provider.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class RequestStatus(models.TextChoices):
    PENDING = "pending", "pending"  # waiting for routing (due at next_attempt_at)
    IN_FLIGHT = "in_flight", "in flight"  # in a batch shard, or claimed for a direct call
    SUCCEEDED = "succeeded", "succeeded"  # result applied by the domain handler
    FAILED = "failed", "failed"  # this attempt failed; a later attempt may exist
    CANCELED = "canceled", "canceled"  # operator cancel; never retried


class Route(models.TextChoices):
    BATCH = "batch", "batch"
    DIRECT = "direct", "direct"


class BatchStatus(models.TextChoices):
    QUEUED = "queued", "queued"  # formed, not yet sent
    SUBMITTING = "submitting", "submitting"  # submission_key written; provider call may be out
    RUNNING = "running", "running"  # provider accepted; polled at next_poll_at
    FINALIZING = "finalizing", "finalizing"  # results being streamed and applied
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELED = "canceled", "canceled"


ACTIVE_BATCH_STATUSES = (
    BatchStatus.QUEUED,
    BatchStatus.SUBMITTING,
    BatchStatus.RUNNING,
    BatchStatus.FINALIZING,
)


class PromptTemplate(models.Model):
    """A system prompt stored once (dedup by SHA-256 of its content)."""

    content_hash = models.CharField(max_length=64, unique=True)
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"prompt {self.content_hash[:12]}"


class LlmBatch(models.Model):
    """One provider batch (a shard of pending requests for one provider and model)."""

    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100)  # engine registry id
    provider_model = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16, choices=BatchStatus.choices, default=BatchStatus.QUEUED
    )
    batch_key = models.CharField(max_length=64, unique=True)
    submission_key = models.CharField(max_length=100, unique=True)
    attempt_index = models.PositiveIntegerField(default=1)  # submit attempts so far
    provider_batch_id = models.CharField(max_length=200, null=True, blank=True, unique=True)
    input_file_id = models.CharField(max_length=200, null=True, blank=True)
    output_file_id = models.CharField(max_length=200, null=True, blank=True)
    error_file_id = models.CharField(max_length=200, null=True, blank=True)
    results_url = models.TextField(null=True, blank=True)
    provider_status = models.CharField(max_length=32, blank=True, default="")
    lease_owner = models.CharField(max_length=100, null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    request_count = models.PositiveIntegerField(default=0)
    input_bytes = models.BigIntegerField(default=0)
    est_input_tokens = models.BigIntegerField(default=0)
    succeeded_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    missing_count = models.PositiveIntegerField(default=0)
    poll_count = models.PositiveIntegerField(default=0)
    finalize_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    submit_started_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The tick's "what is due" scans; partial so finished batches cost nothing.
            models.Index(
                fields=["status", "next_poll_at"],
                name="batch_active_due",
                condition=Q(status__in=["queued", "submitting", "running", "finalizing"]),
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} {self.provider}/{self.model} {self.status}"


class LlmRequest(models.Model):
    """One attempt of one LLM call. Append-only: a retry is a new row (attempt_index + 1)."""

    custom_key = models.CharField(max_length=200)
    attempt_index = models.PositiveSmallIntegerField(default=1)
    process = models.CharField(max_length=64)  # "run:12" / "window:3": holds and progress
    stage = models.CharField(max_length=32)
    status = models.CharField(
        max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING
    )
    route = models.CharField(max_length=8, choices=Route.choices, null=True, blank=True)
    # What routing may choose: "auto" (batch when batchable and enough are due), or forced.
    route_hint = models.CharField(max_length=8, default="auto")
    batchable = models.BooleanField(default=True)
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100)
    provider_model = models.CharField(max_length=200)
    # The two foreign keys have no single-column index and no database constraint. Each
    # index is paid on every one of 10^6 inserts and status updates, and a constraint adds a
    # per-row lookup trigger on insert (system_prompt) and on shard formation (batch):
    # measured 25% of materializing 10^6 requests and ~10% of the database time of a 10^5
    # batch run. What they guarded cannot happen here: prompt templates and batches are
    # append-only (no code path deletes them; their admins are read-only) and every id is
    # written in the transaction that created or looked up its target. batch_id lookups use
    # request_batch_status (its leading column); verify_run reports dangling references.
    system_prompt = models.ForeignKey(
        PromptTemplate,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    user_prompt = models.TextField()
    params = models.JSONField(default=dict)  # max_output_tokens, temperature, json_schema
    prompt_version = models.CharField(max_length=64, blank=True, default="")
    max_attempts = models.PositiveSmallIntegerField(default=3)
    est_input_tokens = models.PositiveIntegerField(default=0)
    output_text = models.TextField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost_usd = models.FloatField(null=True, blank=True)
    error_class = models.CharField(max_length=32, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField()
    batch = models.ForeignKey(
        LlmBatch,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="requests",
        db_index=False,
        db_constraint=False,
    )
    lease_owner = models.CharField(max_length=100, null=True, blank=True)  # direct calls
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["custom_key", "attempt_index"], name="llmrequest_key_attempt_uniq"
            ),
        ]
        indexes = [
            # Routing: due pending work only (the partial index stays small at 10^6 rows).
            # ``id`` makes the claim order (next_attempt_at, id) an index walk that stops at
            # LIMIT, instead of sorting every due row of the model on each tick; the leading
            # (provider, model) also serves the tick's skip scan for models with pending work.
            models.Index(
                fields=["provider", "model", "next_attempt_at", "id"],
                name="request_pending_due",
                condition=Q(status="pending"),
            ),
            # Direct-routed pending work under batch_mode auto/force: usually a handful of rows
            # among 10^5 batchable ones, found without scanning the others.
            models.Index(
                fields=["provider", "model", "next_attempt_at", "id"],
                name="request_pending_direct",
                condition=Q(status="pending") & (Q(route_hint="direct") | Q(batchable=False)),
            ),
            # Orphan/lease scan of direct calls in flight.
            models.Index(
                fields=["lease_expires_at"],
                name="request_direct_inflight",
                condition=Q(status="in_flight", route="direct"),
            ),
            models.Index(fields=["batch", "status"], name="request_batch_status"),
            # Per-stage progress aggregates and holds.
            models.Index(fields=["process", "stage", "status"], name="request_process_stage"),
        ]

    def __str__(self) -> str:
        return f"{self.custom_key}#{self.attempt_index} {self.status}"


class TransportHold(models.Model):
    """A process (``run:12``) whose pending requests must not be routed (pause, cancel).

    Why a table and not a flag on runs: the transport must not know what a run is; domain
    services place and lift holds, the tick filters on them with one anti-join.
    """

    process = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"hold {self.process} ({self.reason})"


class SchedulerLock(models.Model):
    """A named lease used to keep the tick a singleton across beats and workers."""

    name = models.CharField(max_length=64, unique=True)
    owner = models.CharField(max_length=100, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    runs = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"lock {self.name} owner={self.owner}"
