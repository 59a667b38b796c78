"""Pools: frozen, ordered sets of evidence (DOMAIN.md 3.2 step 1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.db import IntegrityError, transaction
from django.utils import timezone

from evidence.demo_corpus import articles
from evidence.models import Evidence, Pool, PoolEvidence, Window, WindowRun, WindowRunStatus


class PoolError(ValueError):
    """A pool request that cannot be honoured (says what and how to fix it)."""


def pool_create(*, tag: str, evidence_ids: Sequence[int]) -> Pool:
    """Freeze ``evidence_ids`` (in this order) as pool ``tag``. A duplicate tag is an error."""
    if not evidence_ids:
        raise PoolError(f"pool {tag!r} would be empty; pass at least one evidence id")
    if len(set(evidence_ids)) != len(evidence_ids):
        raise PoolError(f"pool {tag!r} lists an evidence id twice; each may appear once")
    found = set(Evidence.objects.filter(pk__in=evidence_ids).values_list("pk", flat=True))
    missing = [i for i in evidence_ids if i not in found]
    if missing:
        raise PoolError(f"unknown evidence ids {missing[:10]} for pool {tag!r}")
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
        raise PoolError(f"pool tag {tag!r} already exists; choose another tag") from exc
    return pool


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
