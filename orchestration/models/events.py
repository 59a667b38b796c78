"""The append-only event ledger with correlation ids.

Why append-only inserts and nothing else: the original engine's shared telemetry counter row
caused an OCC storm (DOMAIN.md 7). Here every event is its own row; nothing is ever updated,
so writers never contend. Events are coarse (batch-, stage- and failure-level), never one per
successful request, so the ledger stays small at 10^6 requests.
"""

from __future__ import annotations

from django.db import models


class RunEvent(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    process = models.CharField(max_length=64, db_index=True)  # run:<id> / window:<id> / tick
    stage = models.CharField(max_length=32, blank=True, default="")
    event_type = models.CharField(max_length=64)
    custom_key = models.CharField(max_length=200, blank=True, default="")
    batch_id = models.BigIntegerField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True, default="")
    payload = models.JSONField(default=dict)

    class Meta:
        indexes = [models.Index(fields=["process", "event_type"], name="event_process_type")]

    def __str__(self) -> str:
        return f"{self.process} {self.event_type}"
