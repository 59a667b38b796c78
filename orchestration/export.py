"""Analysis export: one row per score target of a run, as Parquet, CSV or JSONL, plus a manifest.

This is the Python engine's ``packages/analysis`` "responses" table (DOMAIN.md 6): every row
carries the sample ordinal and seed, a config echo, the decoded verdict, abstention, subset
size, critic probabilities, rubric quality, the evidence arrays and bundle provenance, so an
analysis notebook never needs the database (or knowledge of its schema) to compare runs.

Why it streams: a run can hold 10^5–10^6 score targets. Rows are read in keyset-paginated
chunks of target ids (no OFFSET, no server-side cursor, so it also works behind a
transaction-pooling proxy); each chunk costs a fixed number of queries (targets joined with
their sample, rubric, critics and score; the chunk's items; the chunk's score_gen attempts),
and each chunk is written out before the next is read. Memory and query count grow with the
number of chunks, never with a per-row lookup.

Why a manifest next to the file: a data file detached from its configuration is how results
get misattributed. The manifest pins the run, its frozen config body, resolved policy,
``spec_signature``, the git sha the run executed and the file's own SHA-256.

Why only completed runs by default: the original exported completed runs only; a partial
run's rows mix "failed" with "not attempted yet". ``allow_incomplete=True`` is the explicit
opt-in for looking at a run in progress (rows without a score are then ``failed`` as of now).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from configs_app.provenance import PROJECT_DIR, code_version, package_version
from configs_app.spec import parse_spec
from orchestration.models import LlmRequest, Run, RunStatus, ScoreTarget, ScoreTargetItem
from orchestration.services.errors import InvalidState

ExportFormat = Literal["parquet", "csv", "jsonl"]
FORMATS: tuple[ExportFormat, ...] = ("parquet", "csv", "jsonl")
EXTENSIONS: dict[str, str] = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}

# Rows per chunk: big enough that per-chunk query overhead is negligible, small enough that a
# chunk (and its Parquet row group) stays a few MB even with long justifications.
DEFAULT_CHUNK_SIZE = 2000
MANIFEST_FORMAT_VERSION = 1

# (name, Arrow type, manifest type name). The order is the column order of every format.
_COLUMN_SPEC: tuple[tuple[str, Any, str], ...] = (
    ("run_id", pa.int64(), "int64"),
    ("experiment_tag", pa.string(), "string"),
    ("run_config_id", pa.string(), "string"),
    ("spec_signature", pa.string(), "string"),
    ("sample_id", pa.int64(), "int64"),
    ("sample_ordinal", pa.int64(), "int64"),
    ("sample_seed", pa.int64(), "int64"),
    ("target_id", pa.int64(), "int64"),
    ("bundle_index", pa.int64(), "int64"),
    ("bundle_signature", pa.string(), "string"),
    ("evidence_ids", pa.list_(pa.int64()), "list<int64>"),
    ("window_ids", pa.list_(pa.int64()), "list<int64>"),
    ("evidence_count", pa.int64(), "int64"),
    ("rubric_model", pa.string(), "string"),
    ("scoring_model", pa.string(), "string"),
    ("concept", pa.string(), "string"),
    ("scale_size", pa.int64(), "int64"),
    ("method", pa.string(), "string"),
    ("abstain_enabled", pa.bool_(), "bool"),
    ("evidence_view", pa.string(), "string"),
    ("randomizations", pa.list_(pa.string()), "list<string>"),
    ("evidence_bundle_size", pa.int64(), "int64"),
    ("bundle_strategy", pa.string(), "string"),
    ("decoded_scores", pa.list_(pa.int64()), "list<int64>"),
    ("abstained", pa.bool_(), "bool"),
    ("subset_size", pa.int64(), "int64"),
    ("raw_verdict", pa.string(), "string"),
    ("score_justification", pa.string(), "string"),
    ("expert_agreement_prob", pa.float64(), "float64"),
    ("rubric_observability", pa.float64(), "float64"),
    ("rubric_discriminability", pa.float64(), "float64"),
    ("rubric_label_mapping", pa.string(), "string"),
    ("status", pa.string(), "string"),
    ("score_attempts", pa.int64(), "int64"),
    ("score_error", pa.string(), "string"),
)

COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _COLUMN_SPEC)
ARROW_SCHEMA: Any = pa.schema([pa.field(name, type_) for name, type_, _ in _COLUMN_SPEC])

# ``score_error`` for a target that was never attempted because its sample has no rubric: the
# engine counts it as failed (blocked by exhausted upstream work), and an empty error would
# hide why.
UPSTREAM_FAILED = "upstream_failed"


class ExportRefused(InvalidState):
    """The run may not be exported as asked (not completed and no explicit opt-in)."""

    code = "export_refused"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    manifest_path: Path


@lru_cache(maxsize=1)
def engine_version() -> str:
    """``judge-gym <version>`` from pyproject.toml (the project is not installed as a wheel
    in development), else the installed distribution's version, else ``unknown``."""
    try:
        with (PROJECT_DIR / "pyproject.toml").open("rb") as fh:
            version = tomllib.load(fh)["project"]["version"]
        return f"judge-gym {version}"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return (package_version() or "unknown").replace("==", " ")


def default_export_path(*, run: Run, fmt: str) -> Path:
    """``<VAR_DIR>/exports/<tag>-run<id>.<ext>``: one file per run and format, re-export
    overwrites it (the manifest's created_at says when)."""
    _check_format(fmt)
    var_dir = Path(getattr(settings, "VAR_DIR", Path(settings.BASE_DIR) / "var"))
    return var_dir / "exports" / f"{run.experiment.tag}-run{run.pk}.{EXTENSIONS[fmt]}"


def manifest_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InvalidState(f"unknown export format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")


# --- reading -----------------------------------------------------------------------------------


def _config_echo(config_body: dict[str, Any]) -> dict[str, Any]:
    """The judge configuration repeated on every row (validated, defaults filled in)."""
    spec = parse_spec(config_body)
    return {
        "rubric_model": spec.rubric.model,
        "scoring_model": spec.scoring.model,
        "concept": spec.rubric.concept,
        "scale_size": spec.rubric.scale_size,
        "method": spec.scoring.method,
        "abstain_enabled": spec.scoring.abstain_enabled,
        "evidence_view": spec.scoring.evidence_view,
        "randomizations": list(spec.scoring.randomizations),
        "evidence_bundle_size": spec.scoring.evidence_bundle_size,
        "bundle_strategy": spec.scoring.bundle_strategy,
    }


_TARGET_FIELDS = (
    "id",
    "sample_id",
    "bundle_index",
    "bundle_signature",
    "sample__ordinal",
    "sample__seed",
    "sample__rubric__id",
    "sample__rubric__label_mapping",
    "sample__rubric_critic__observability_score",
    "sample__rubric_critic__discriminability_score",
    "score__id",
    "score__decoded_scores",
    "score__abstained",
    "score__raw_verdict",
    "score__justification",
    "score_critic__expert_agreement_prob",
)


def _target_chunks(run: Run, chunk_size: int) -> Iterator[list[dict[str, Any]]]:
    """Keyset pagination over the run's targets (ordered by id): one query per chunk, with
    the sample, its rubric and critic, the score and the score critic LEFT JOINed in."""
    last_id = 0
    while True:
        chunk = list(
            ScoreTarget.objects.filter(run_id=run.pk, pk__gt=last_id)
            .order_by("pk")
            .values(*_TARGET_FIELDS)[:chunk_size]
        )
        if not chunk:
            return
        yield chunk
        if len(chunk) < chunk_size:
            return
        last_id = int(chunk[-1]["id"])


def _items_for(target_ids: Sequence[int]) -> dict[int, tuple[list[int], list[int]]]:
    """Evidence and window ids per target, in position order (one query per chunk)."""
    out: dict[int, tuple[list[int], list[int]]] = {tid: ([], []) for tid in target_ids}
    rows = (
        ScoreTargetItem.objects.filter(target_id__in=target_ids)
        .order_by("target_id", "position")
        .values_list("target_id", "evidence_id", "window_id")
    )
    for tid, evidence_id, window_id in rows:
        evidence, windows = out[tid]
        evidence.append(int(evidence_id))
        windows.append(int(window_id))
    return out


def _score_key(target_id: int) -> str:
    return f"sample_score_target:{target_id}:score_gen"


def _attempts_for(target_ids: Sequence[int]) -> dict[int, tuple[int, str | None]]:
    """Per target: the number of score_gen attempt rows and the latest non-empty error class.

    One indexed query per chunk (``custom_key`` leads the unique (key, attempt) index); at
    most max_attempts rows per target come back, folded here.
    """
    by_key = {_score_key(tid): tid for tid in target_ids}
    counts: dict[int, int] = {}
    latest: dict[int, tuple[int, str]] = {}
    rows = LlmRequest.objects.filter(custom_key__in=list(by_key)).values_list(
        "custom_key", "attempt_index", "error_class"
    )
    for key, attempt_index, error_class in rows:
        tid = by_key[key]
        counts[tid] = counts.get(tid, 0) + 1
        if error_class and attempt_index >= latest.get(tid, (0, ""))[0]:
            latest[tid] = (attempt_index, error_class)
    return {
        tid: (counts.get(tid, 0), latest[tid][1] if tid in latest else None) for tid in target_ids
    }


def _label_mapping_json(mapping: Any) -> str | None:
    if mapping is None:
        return None
    return orjson.dumps(mapping, option=orjson.OPT_SORT_KEYS).decode()


def _rows_for_chunk(chunk: list[dict[str, Any]], constants: dict[str, Any]) -> list[dict[str, Any]]:
    target_ids = [int(t["id"]) for t in chunk]
    items = _items_for(target_ids)
    attempts = _attempts_for(target_ids)
    rows: list[dict[str, Any]] = []
    for t in chunk:
        tid = int(t["id"])
        evidence_ids, window_ids = items[tid]
        scored = t["score__id"] is not None
        decoded = [int(v) for v in (t["score__decoded_scores"] or [])] if scored else None
        n_attempts, last_error = attempts[tid]
        error: str | None = None
        if not scored:
            error = last_error
            if error is None and n_attempts == 0 and t["sample__rubric__id"] is None:
                error = UPSTREAM_FAILED
        row = {
            **constants,
            "sample_id": int(t["sample_id"]),
            "sample_ordinal": int(t["sample__ordinal"]),
            "sample_seed": int(t["sample__seed"]),
            "target_id": tid,
            "bundle_index": int(t["bundle_index"]),
            "bundle_signature": t["bundle_signature"],
            "evidence_ids": evidence_ids,
            "window_ids": window_ids,
            "evidence_count": len(evidence_ids),
            "decoded_scores": decoded,
            "abstained": bool(t["score__abstained"]) if scored else None,
            "subset_size": len(decoded) if decoded is not None else None,
            "raw_verdict": t["score__raw_verdict"],
            "score_justification": t["score__justification"],
            "expert_agreement_prob": t["score_critic__expert_agreement_prob"],
            "rubric_observability": t["sample__rubric_critic__observability_score"],
            "rubric_discriminability": t["sample__rubric_critic__discriminability_score"],
            "rubric_label_mapping": _label_mapping_json(t["sample__rubric__label_mapping"]),
            "status": "scored" if scored else "failed",
            "score_attempts": n_attempts,
            "score_error": error,
        }
        rows.append({name: row[name] for name in COLUMNS})
    return rows


def iter_export_rows(
    *, run: Run, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[list[dict[str, Any]]]:
    """The export rows of ``run``, one list per chunk (for callers writing other sinks)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    config = run.run_config
    constants = {
        "run_id": run.pk,
        "experiment_tag": run.experiment.tag,
        "run_config_id": str(config.pk),
        "spec_signature": config.spec_signature,
        **_config_echo(config.config_body),
    }
    for chunk in _target_chunks(run, chunk_size):
        yield _rows_for_chunk(chunk, constants)


# --- writing -----------------------------------------------------------------------------------


def _csv_cell(value: Any) -> Any:
    """CSV has no types: lists become JSON, booleans ``true``/``false``, null the empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return orjson.dumps(value).decode()
    if isinstance(value, float):
        return repr(value)
    return value


def _write_rows(fmt: str, path: Path, chunks: Iterator[list[dict[str, Any]]]) -> int:
    rows = 0
    if fmt == "parquet":
        with pq.ParquetWriter(str(path), ARROW_SCHEMA, compression="zstd") as writer:
            for chunk in chunks:
                # One row group per chunk: readers can stream the file the way it was written.
                writer.write_table(
                    pa.Table.from_pylist(chunk, schema=ARROW_SCHEMA), row_group_size=len(chunk)
                )
                rows += len(chunk)
    elif fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer_csv = csv.writer(fh)
            writer_csv.writerow(COLUMNS)
            for chunk in chunks:
                writer_csv.writerows([_csv_cell(row[c]) for c in COLUMNS] for row in chunk)
                rows += len(chunk)
    else:
        with path.open("wb") as fh_bin:
            for chunk in chunks:
                fh_bin.write(b"".join(orjson.dumps(row) + b"\n" for row in chunk))
                rows += len(chunk)
    return rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _snapshot() -> Iterator[None]:
    """Read everything from one database snapshot, so the rows, the counts in the manifest
    and the run's status agree even if the run is still moving (``allow_incomplete``).

    On PostgreSQL a REPEATABLE READ, READ ONLY transaction; inside a caller's transaction the
    caller's isolation applies (SET TRANSACTION must be the first statement).
    """
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def run_export(
    *,
    run: Run,
    fmt: ExportFormat | str,
    path: str | os.PathLike[str] | None = None,
    allow_incomplete: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ExportResult:
    """Write ``run``'s responses to ``path`` (default: :func:`default_export_path`) and the
    manifest to ``<path>.manifest.json``.

    Raises :class:`ExportRefused` for a run that is not completed unless
    ``allow_incomplete``. The data file is written under a temporary name and renamed into
    place, and the manifest only after it, so a crash never leaves a file that looks complete.
    """
    _check_format(fmt)
    target = Path(path) if path is not None else default_export_path(run=run, fmt=fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with _snapshot():
        fresh = Run.objects.select_related("experiment", "run_config").get(pk=run.pk)
        if fresh.status != RunStatus.COMPLETED and not allow_incomplete:
            raise ExportRefused(
                f"run {fresh.pk} ({fresh.experiment.tag}) is {fresh.status}, not completed; "
                "only completed runs are exported by default",
                fix="wait for it to complete, or pass allow_incomplete=True "
                "(--allow-incomplete) to export it as it is now",
                run_id=fresh.pk,
                status=fresh.status,
            )
        counts = {"scored": 0, "failed": 0}
        try:
            rows = _write_rows(
                fmt, partial, _tally(iter_export_rows(run=fresh, chunk_size=chunk_size), counts)
            )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, target)
    manifest = _manifest(
        run=fresh, fmt=fmt, path=target, rows=rows, counts=counts, incomplete=allow_incomplete
    )
    manifest_path = manifest_path_for(target)
    manifest_path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return ExportResult(path=target, rows=rows, manifest_path=manifest_path)


def _tally(
    chunks: Iterator[list[dict[str, Any]]], counts: dict[str, int]
) -> Iterator[list[dict[str, Any]]]:
    """Count rows per status on the way to the writer (no second pass over the run)."""
    for chunk in chunks:
        for row in chunk:
            counts[row["status"]] += 1
        yield chunk


def _manifest(
    *, run: Run, fmt: str, path: Path, rows: int, counts: dict[str, int], incomplete: bool
) -> dict[str, Any]:
    config = run.run_config
    return {
        "kind": "judge-gym/responses",
        "manifest_version": MANIFEST_FORMAT_VERSION,
        "run_id": run.pk,
        "experiment_tag": run.experiment.tag,
        "run_status": run.status,
        "allow_incomplete": incomplete,
        "run_created_at": _iso(run.created_at),
        "run_completed_at": _iso(run.completed_at),
        "sample_count": run.sample_count,
        "target_count": run.target_count,
        "run_config_id": str(config.pk),
        "template_id": config.template_id,
        "template_version": config.template_version,
        "spec_signature": config.spec_signature,
        "git_sha": config.git_sha,
        "config_body": config.config_body,
        "resolved_policy": config.resolved_policy,
        "format": fmt,
        "file": path.name,
        "file_sha256": _sha256(path),
        "row_count": rows,
        "scored_count": counts["scored"],
        "failed_count": counts["failed"],
        "columns": [{"name": name, "type": type_name} for name, _, type_name in _COLUMN_SPEC],
        "created_at": _iso(timezone.now()),
        "engine_version": engine_version(),
        "export_code_version": code_version(),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


__all__ = [
    "ARROW_SCHEMA",
    "COLUMNS",
    "FORMATS",
    "ExportRefused",
    "ExportResult",
    "default_export_path",
    "engine_version",
    "iter_export_rows",
    "manifest_path_for",
    "run_export",
]
