"""run_export: rows, columns, per-format decoding, failed targets, manifest, refusal."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.export import (
    ARROW_SCHEMA,
    COLUMNS,
    ExportRefused,
    default_export_path,
    run_export,
)
from tests.export.builders import LABELS, Crafted, crafted_run

pytestmark = pytest.mark.django_db

EXPECTED_COLUMNS = [
    "run_id",
    "experiment_tag",
    "run_config_id",
    "spec_signature",
    "sample_id",
    "sample_ordinal",
    "sample_seed",
    "target_id",
    "bundle_index",
    "bundle_signature",
    "evidence_ids",
    "window_ids",
    "evidence_count",
    "rubric_model",
    "scoring_model",
    "concept",
    "scale_size",
    "method",
    "abstain_enabled",
    "evidence_view",
    "randomizations",
    "evidence_bundle_size",
    "bundle_strategy",
    "decoded_scores",
    "abstained",
    "subset_size",
    "raw_verdict",
    "score_justification",
    "expert_agreement_prob",
    "rubric_observability",
    "rubric_discriminability",
    "rubric_label_mapping",
    "status",
    "score_attempts",
    "score_error",
]


def read_parquet(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


_CSV_INT = {
    "run_id",
    "sample_id",
    "sample_ordinal",
    "sample_seed",
    "target_id",
    "bundle_index",
    "evidence_count",
    "scale_size",
    "evidence_bundle_size",
    "subset_size",
    "score_attempts",
}
_CSV_FLOAT = {"expert_agreement_prob", "rubric_observability", "rubric_discriminability"}
_CSV_BOOL = {"abstain_enabled", "abstained"}
_CSV_JSON = {"evidence_ids", "window_ids", "randomizations", "decoded_scores"}


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Decode the documented CSV conventions back into typed values."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == EXPECTED_COLUMNS
        rows = []
        for raw in reader:
            row: dict[str, Any] = {}
            for key, text in raw.items():
                if text == "":
                    row[key] = None
                elif key in _CSV_INT:
                    row[key] = int(text)
                elif key in _CSV_FLOAT:
                    row[key] = float(text)
                elif key in _CSV_BOOL:
                    assert text in {"true", "false"}
                    row[key] = text == "true"
                elif key in _CSV_JSON:
                    row[key] = json.loads(text)
                else:
                    row[key] = text
            rows.append(row)
    return rows


READERS = {"parquet": read_parquet, "csv": read_csv, "jsonl": read_jsonl}


def by_target(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {row["target_id"]: row for row in rows}


def test_columns_are_exactly_the_documented_list() -> None:
    assert list(COLUMNS) == EXPECTED_COLUMNS
    assert ARROW_SCHEMA.names == EXPECTED_COLUMNS
    assert ARROW_SCHEMA.field("evidence_ids").type == pa.list_(pa.int64())
    assert ARROW_SCHEMA.field("window_ids").type == pa.list_(pa.int64())
    assert ARROW_SCHEMA.field("decoded_scores").type == pa.list_(pa.int64())


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_rows_decode_for_every_format(crafted: Crafted, tmp_path: Path, fmt: str) -> None:
    c = crafted
    path = tmp_path / f"out.{fmt}"
    result = run_export(run=c.run, fmt=fmt, path=path)
    assert result.path == path
    assert result.rows == 6
    rows = READERS[fmt](path)
    assert len(rows) == 6
    assert all(list(row) == EXPECTED_COLUMNS for row in rows)
    # Ordered by target id.
    assert [r["target_id"] for r in rows] == sorted(t.pk for t in c.targets.values())
    rows_by = by_target(rows)
    t = {name: rows_by[target.pk] for name, target in c.targets.items()}
    ev = c.evidence

    # Constants and config echo on every row.
    config = c.run.run_config
    for row in rows:
        assert row["run_id"] == c.run.pk
        assert row["experiment_tag"] == "exp-export"
        assert row["run_config_id"] == str(config.pk)
        assert row["spec_signature"] == config.spec_signature
        assert row["rubric_model"] == "gpt-4.1-mini"
        assert row["scoring_model"] == "gpt-4.1-mini"
        assert row["concept"] == "fascism"
        assert row["scale_size"] == 4
        assert row["method"] == "subset"
        assert row["abstain_enabled"] is True
        assert row["evidence_view"] == "l2_neutralized"
        # Stored sorted by the spec normalizer.
        assert row["randomizations"] == [
            "anonymize_stages",
            "hide_label_text",
            "shuffle_rubric_order",
        ]
        assert row["evidence_bundle_size"] == 2
        assert row["bundle_strategy"] == "window_round_robin"

    # Sample provenance (negative and max int32 seeds survive).
    assert (t["t1"]["sample_ordinal"], t["t1"]["sample_seed"]) == (1, 111)
    assert t["t4"]["sample_seed"] == -5
    assert t["t6"]["sample_seed"] == 2**31 - 1
    assert t["t4"]["sample_id"] == c.samples["s2"].pk

    # Evidence arrays in position order (not sorted), with their windows; bundle provenance.
    assert t["t1"]["evidence_ids"] == [ev[0], ev[3]]
    assert t["t1"]["window_ids"] == [c.windows[ev[0]], c.windows[ev[3]]]
    assert t["t1"]["window_ids"][0] != t["t1"]["window_ids"][1]
    assert t["t3"]["evidence_ids"] == [ev[2], ev[4], ev[5]]
    assert t["t3"]["evidence_count"] == 3
    assert t["t2"]["evidence_count"] == 1
    assert t["t3"]["bundle_index"] == 2
    assert t["t3"]["bundle_signature"] == "|".join(str(i) for i in sorted([ev[2], ev[4], ev[5]]))

    # Scores: subset, abstain, singleton.
    assert t["t1"]["decoded_scores"] == [2, 3]
    assert (t["t1"]["abstained"], t["t1"]["subset_size"]) == (False, 2)
    assert t["t1"]["raw_verdict"] == "VERDICT: b9Zk, Mm3p"
    assert t["t1"]["score_justification"] == "because t1"
    assert t["t2"]["decoded_scores"] == []
    assert (t["t2"]["abstained"], t["t2"]["subset_size"]) == (True, 0)
    assert t["t4"]["decoded_scores"] == [1]
    assert t["t4"]["subset_size"] == 1

    # Critics and rubric quality (nulls where the critic is missing).
    assert t["t1"]["expert_agreement_prob"] == pytest.approx(0.7)
    assert t["t2"]["expert_agreement_prob"] == pytest.approx(0.9)
    assert t["t4"]["expert_agreement_prob"] is None
    assert t["t1"]["rubric_observability"] == pytest.approx(0.8)
    assert t["t1"]["rubric_discriminability"] == pytest.approx(0.6)
    assert t["t4"]["rubric_observability"] is None
    assert json.loads(t["t1"]["rubric_label_mapping"]) == LABELS
    assert t["t6"]["rubric_label_mapping"] is None

    # Status, attempts and errors.
    for name in ("t1", "t2", "t4", "t5"):
        assert t[name]["status"] == "scored"
        assert t[name]["score_error"] is None
    assert t["t1"]["score_attempts"] == 1
    assert t["t2"]["score_attempts"] == 2  # parse failure then success: not an error
    failed = t["t3"]
    assert failed["status"] == "failed"
    assert failed["score_attempts"] == 3
    assert failed["score_error"] == "timeout"  # the last attempt's class
    assert failed["decoded_scores"] is None
    assert failed["abstained"] is None
    assert failed["subset_size"] is None
    assert failed["raw_verdict"] is None
    assert failed["score_justification"] is None
    never = t["t6"]
    assert never["status"] == "failed"
    assert never["score_attempts"] == 0
    assert never["score_error"] == "upstream_failed"


def test_parquet_schema_and_row_groups(crafted: Crafted, tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    run_export(run=crafted.run, fmt="parquet", path=path, chunk_size=4)
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow.equals(ARROW_SCHEMA)
    # One row group per chunk: 4 + 2.
    assert parquet.metadata.num_row_groups == 2
    assert [parquet.metadata.row_group(i).num_rows for i in range(2)] == [4, 2]


def test_manifest(crafted: Crafted, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    result = run_export(run=crafted.run, fmt="jsonl", path=path)
    assert result.manifest_path == tmp_path / "out.jsonl.manifest.json"
    manifest = json.loads(result.manifest_path.read_text(encoding="utf-8"))
    config = crafted.run.run_config
    assert manifest["run_id"] == crafted.run.pk
    assert manifest["experiment_tag"] == "exp-export"
    assert manifest["run_status"] == "completed"
    assert manifest["spec_signature"] == config.spec_signature
    assert manifest["git_sha"] == "abc123"
    assert manifest["config_body"] == config.config_body
    assert manifest["resolved_policy"] == {"models": {}, "run": {}}
    assert manifest["run_config_id"] == str(config.pk)
    assert manifest["row_count"] == 6
    assert (manifest["scored_count"], manifest["failed_count"]) == (4, 2)
    assert [col["name"] for col in manifest["columns"]] == EXPECTED_COLUMNS
    assert {col["name"]: col["type"] for col in manifest["columns"]}["evidence_ids"] == (
        "list<int64>"
    )
    assert manifest["format"] == "jsonl"
    assert manifest["file"] == "out.jsonl"
    assert manifest["engine_version"].startswith("judge-gym ")
    assert manifest["created_at"]
    import hashlib

    assert manifest["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not (tmp_path / "out.jsonl.partial").exists()


@pytest.mark.parametrize("status", ["running", "failed", "paused", "canceled"])
def test_incomplete_run_is_refused_without_opt_in(tmp_path: Path, db: None, status: str) -> None:
    c = crafted_run(status=status)
    path = tmp_path / "out.csv"
    with pytest.raises(ExportRefused) as info:
        run_export(run=c.run, fmt="csv", path=path)
    assert status in str(info.value)
    assert "allow-incomplete" in info.value.fix
    assert not path.exists()
    assert not Path(f"{path}.manifest.json").exists()

    result = run_export(run=c.run, fmt="csv", path=path, allow_incomplete=True)
    assert result.rows == 6
    manifest = json.loads(result.manifest_path.read_text(encoding="utf-8"))
    assert manifest["run_status"] == status
    assert manifest["allow_incomplete"] is True


def test_status_is_read_fresh_from_the_database(crafted: Crafted, tmp_path: Path) -> None:
    """A stale in-memory Run saying 'completed' must not export a run that is not."""
    from orchestration.models import Run

    Run.objects.filter(pk=crafted.run.pk).update(status="running")
    with pytest.raises(ExportRefused):
        run_export(run=crafted.run, fmt="jsonl", path=tmp_path / "x.jsonl")


def test_unknown_format_and_default_path(crafted: Crafted, settings: Any, tmp_path: Path) -> None:
    from orchestration.services.errors import InvalidState

    with pytest.raises(InvalidState):
        run_export(run=crafted.run, fmt="xlsx", path=tmp_path / "x.xlsx")
    settings.VAR_DIR = tmp_path
    expected = tmp_path / "exports" / f"exp-export-run{crafted.run.pk}.parquet"
    assert default_export_path(run=crafted.run, fmt="parquet") == expected
    result = run_export(run=crafted.run, fmt="parquet")
    assert result.path == expected
    assert result.manifest_path == tmp_path / "exports" / f"{expected.name}.manifest.json"
    assert len(read_parquet(expected)) == 6


def test_run_without_targets_exports_an_empty_file(db: None, tmp_path: Path) -> None:
    from tests.export.builders import base_run

    run = base_run()
    for fmt in ("parquet", "csv", "jsonl"):
        result = run_export(run=run, fmt=fmt, path=tmp_path / f"e.{fmt}")
        assert result.rows == 0
        assert READERS[fmt](result.path) == []
    assert pq.read_table(tmp_path / "e.parquet").schema.equals(ARROW_SCHEMA)
