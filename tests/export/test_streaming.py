"""Export of a 20,000-target run: bounded queries (grow with chunks, not rows)."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from evidence.models import PoolEvidence
from orchestration.export import run_export
from orchestration.models import LlmRequest, Sample, Score, ScoreTarget, ScoreTargetItem
from tests.export.builders import base_run, req

pytestmark = pytest.mark.django_db

TARGETS = 20_000
SAMPLES = 20


@pytest.fixture
def big_run(db: None):
    run = base_run(tag="exp-big", sample_count=SAMPLES)
    members = list(
        PoolEvidence.objects.filter(pool=run.experiment.pool).values_list(
            "evidence_id", "evidence__window_id"
        )
    )
    samples = Sample.objects.bulk_create(
        [Sample(run=run, ordinal=i + 1, seed=i, model="gpt-4.1-mini") for i in range(SAMPLES)]
    )
    per_sample = TARGETS // SAMPLES
    targets = ScoreTarget.objects.bulk_create(
        [
            ScoreTarget(run=run, sample=s, bundle_index=b, bundle_signature=str(b))
            for s in samples
            for b in range(per_sample)
        ],
        batch_size=5000,
    )
    ScoreTargetItem.objects.bulk_create(
        [
            ScoreTargetItem(
                target=t,
                evidence_id=members[(t.bundle_index + p) % len(members)][0],
                window_id=members[(t.bundle_index + p) % len(members)][1],
                position=p,
            )
            for t in targets
            for p in range(2)
        ],
        batch_size=5000,
    )
    Score.objects.bulk_create(
        [
            Score(
                run=run,
                sample_id=t.sample_id,
                target=t,
                llm_request_id=1,
                model="m",
                justification="j",
                raw_verdict="VERDICT: A",
                decoded_scores=[1 + t.bundle_index % 4],
            )
            for t in targets[::2]
        ],
        batch_size=5000,
    )
    # Some attempt rows so the per-chunk attempt lookup has work to do.
    template = req(run, "seed-row", "score_gen")
    LlmRequest.objects.bulk_create(
        [
            LlmRequest(
                custom_key=f"sample_score_target:{t.pk}:score_gen",
                attempt_index=1,
                process=template.process,
                stage="score_gen",
                status="failed",
                error_class="parse",
                provider="openai",
                model="gpt-4.1-mini",
                provider_model="x",
                user_prompt="p",
                next_attempt_at=template.next_attempt_at,
            )
            for t in targets[1::2]
        ],
        batch_size=5000,
    )
    run.target_count = TARGETS
    run.save(update_fields=["target_count"])
    return run


def _export_queries(run, path: Path, chunk_size: int) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as ctx:
        result = run_export(run=run, fmt="parquet", path=path, chunk_size=chunk_size)
    return result.rows, len(ctx.captured_queries)


def test_queries_grow_with_chunks_not_rows(big_run, tmp_path: Path) -> None:
    rows, queries = _export_queries(big_run, tmp_path / "a.parquet", 2000)
    assert rows == TARGETS
    chunks = math.ceil(TARGETS / 2000)
    # 3 queries per chunk (targets+joins, items, attempts) plus a constant handful.
    assert queries <= 3 * chunks + 8, queries

    _, queries_small = _export_queries(big_run, tmp_path / "b.parquet", 1000)
    assert queries_small <= 3 * math.ceil(TARGETS / 1000) + 8
    assert queries_small > queries  # more chunks, more queries: per chunk, not per row

    table = pq.read_table(tmp_path / "a.parquet")
    assert table.num_rows == TARGETS
    assert pq.ParquetFile(tmp_path / "a.parquet").metadata.num_row_groups == chunks
    ids = table.column("target_id").to_pylist()
    assert ids == sorted(ids)
    assert len(set(ids)) == TARGETS
    statuses = table.column("status").to_pylist()
    assert statuses.count("scored") == TARGETS // 2
    errors = table.column("score_error").to_pylist()
    assert errors.count("parse") == TARGETS // 2
    assert all(len(e) == 2 for e in table.column("evidence_ids").to_pylist())


def test_csv_and_jsonl_stream_too(big_run, tmp_path: Path) -> None:
    for fmt in ("csv", "jsonl"):
        path = tmp_path / f"x.{fmt}"
        with CaptureQueriesContext(connection) as ctx:
            result = run_export(run=big_run, fmt=fmt, path=path, chunk_size=5000)
        assert result.rows == TARGETS
        assert len(ctx.captured_queries) <= 3 * 4 + 8
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines == TARGETS + (1 if fmt == "csv" else 0)
