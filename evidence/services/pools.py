"""Pools: frozen, ordered sets of evidence (DOMAIN.md 3.2 step 1).

``pool_create`` freezes explicit evidence ids; ``windows_pool_create`` freezes the evidence of
whole windows that reached a stage (the usual way a collected window becomes judgeable).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.db import IntegrityError, transaction
from django.utils import timezone

from evidence.demo_corpus import articles
from evidence.models import (
    Evidence,
    EvidenceView,
    Pool,
    PoolEvidence,
    Window,
    WindowRun,
    WindowRunStatus,
)
from evidence.services.errors import EvidenceInvalid


class PoolError(EvidenceInvalid):
    """A pool request that cannot be honoured (says what and how to fix it)."""

    code = "pool_error"

    def __init__(self, message: str, *, fix: str = "") -> None:
        super().__init__(message, fix=fix)


def pool_create(*, tag: str, evidence_ids: Sequence[int]) -> Pool:
    """Freeze ``evidence_ids`` (in this order) as pool ``tag``. A duplicate tag is an error."""
    if not evidence_ids:
        raise PoolError(f"pool {tag!r} would be empty", fix="pass at least one evidence id")
    if len(set(evidence_ids)) != len(evidence_ids):
        raise PoolError(
            f"pool {tag!r} lists an evidence id twice", fix="list each evidence id once"
        )
    found = set(Evidence.objects.filter(pk__in=evidence_ids).values_list("pk", flat=True))
    missing = [i for i in evidence_ids if i not in found]
    if missing:
        raise PoolError(
            f"unknown evidence ids {missing[:10]} for pool {tag!r}", fix="check the ids"
        )
    try:
        with transaction.atomic():
            pool = Pool.objects.create(tag=tag, evidence_count=len(evidence_ids))
            PoolEvidence.objects.bulk_create(
                [
                    PoolEvidence(pool=pool, evidence_id=eid, position=i)
                    for i, eid in enumerate(evidence_ids)
                ],
                batch_size=2000,
            )
    except IntegrityError as exc:
        raise PoolError(f"pool tag {tag!r} already exists", fix="choose another pool tag") from exc
    return pool


def windows_pool_create(
    *, pool_tag: str, window_tags: Sequence[str], stage: str = EvidenceView.L3_ABSTRACTED
) -> Pool:
    """Freeze the evidence of ``window_tags`` that reached ``stage`` as pool ``pool_tag``.

    Per window, the latest *completed* window run is used (a running window may still change;
    a failed one has nothing trustworthy at the stage that failed). Members are ordered by
    window (as listed), then by evidence id, which is collection order. A duplicate pool tag,
    an unknown or uncollected window, or an empty result is a ``PoolError`` naming the fix.
    """
    if stage not in EvidenceView.values:
        raise PoolError(
            f"unknown stage {stage!r}", fix=f"use one of {', '.join(EvidenceView.values)}"
        )
    tags = [t.strip() for t in window_tags if t.strip()]
    if not tags:
        raise PoolError("no windows given", fix="pass --windows a,b")
    if len(set(tags)) != len(tags):
        raise PoolError("a window is listed twice", fix="list each window once")
    if Pool.objects.filter(tag=pool_tag).exists():
        raise PoolError(f"pool tag {pool_tag!r} already exists", fix="choose another pool tag")
    ids: list[int] = []
    for tag in tags:
        if not Window.objects.filter(tag=tag).exists():
            raise PoolError(f"window {tag!r} does not exist", fix="create and collect it first")
        run = (
            WindowRun.objects.filter(window__tag=tag, status=WindowRunStatus.COMPLETED)
            .order_by("-pk")
            .first()
        )
        if run is None:
            raise PoolError(
                f"window {tag!r} has no completed window run",
                fix=f"collect it (`manage.py windows collect {tag}`) and wait for completion",
            )
        ids.extend(
            Evidence.objects.filter(window_run=run, **{f"{stage}__isnull": False})
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    if not ids:
        raise PoolError(
            f"no evidence of windows {', '.join(tags)} reached {stage}",
            fix="choose a lower stage, or other windows",
        )
    return pool_create(tag=pool_tag, evidence_ids=ids)


def demo_pool_load(*, tag: str, windows: int = 2, per_window: int = 10) -> Pool:
    """Load a pool from the built-in synthetic corpus (raw l0 only), idempotently by tag.

    Used by the demo until evidence is collected through the window pipeline; the evidence
    pipeline then fills l1..l3 for windows it collects itself.
    """
    existing = Pool.objects.filter(tag=tag).first()
    if existing is not None:
        return existing
    countries = ["Hungary", "Poland", "Brazil", "India", "Italy", "Turkey"]
    ids: list[int] = []
    with transaction.atomic():
        for w in range(windows):
            country = countries[w % len(countries)]
            window, _ = Window.objects.get_or_create(
                tag=f"{tag}-{country.lower()}",
                defaults={
                    "query": "fascism",
                    "country": country,
                    "start_date": dt.date(2026, 1, 1),
                    "end_date": dt.date(2026, 1, 31),
                    "model": "gpt-4.1-mini",
                    "evidence_limit": per_window,
                },
            )
            run = WindowRun.objects.create(
                window=window,
                status=WindowRunStatus.COMPLETED,
                current_stage="l0_raw",
                target_stage="l0_raw",
                started_at=timezone.now(),
                completed_at=timezone.now(),
            )
            for art in articles(
                query=window.query,
                country=country,
                start=str(window.start_date),
                end=str(window.end_date),
                limit=per_window,
            ):
                ev, _ = Evidence.objects.get_or_create(
                    window_run=run,
                    url=art.url,
                    defaults={"window": window, "title": art.title, "l0_raw": art.markdown},
                )
                ids.append(ev.pk)
        return pool_create(tag=tag, evidence_ids=ids)
