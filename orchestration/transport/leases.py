"""Lease helpers: owner ids and the named scheduler lock (conditional UPDATE, no broadcast)."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from orchestration.models import SchedulerLock


def new_owner(kind: str) -> str:
    """A lease owner id unique per call: ``<kind>:<host>:<pid>:<rand>``."""
    return f"{kind}:{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:10]}"


def lock_acquire(*, name: str, owner: str, ttl_s: float) -> bool:
    """Take (or renew) the named lock if it is free, expired, or already ours.

    One conditional UPDATE: whichever process changes the row holds the lock; every other
    concurrent caller sees ``rowcount == 0``. Works the same on PostgreSQL and SQLite.
    """
    now = timezone.now()
    expires = now + timedelta(seconds=ttl_s)
    updated = (
        SchedulerLock.objects.filter(name=name)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__lt=now) | Q(owner=owner))
        .update(owner=owner, expires_at=expires, heartbeat_at=now)
    )
    if updated:
        return True
    if not SchedulerLock.objects.filter(name=name).exists():
        try:
            with transaction.atomic():
                SchedulerLock.objects.create(
                    name=name, owner=owner, expires_at=expires, heartbeat_at=now
                )
            return True
        except IntegrityError:
            return False  # somebody else created it first
    return False


def lock_release(*, name: str, owner: str) -> None:
    SchedulerLock.objects.filter(name=name, owner=owner).update(expires_at=None, owner="")
