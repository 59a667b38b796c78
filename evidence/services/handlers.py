"""Result handler for ``evidence:<id>:<l1_cleaned|l2_neutralized|l3_abstracted>`` requests.

Registered with the transport by custom-key prefix (``evidence.apps``). For each chunk of
successful provider outputs (inside the transport's chunk transaction):

1. load the source text (the previous level) of every evidence row in the chunk, and the
   ``max_attempts`` of every request, in two bulk queries;
2. check each output with ``check_transform_output`` (non-empty, requested prefix, no wrapper,
   the stated length invariant). A violation is a ``Rejection("parse", reason)``: the transport
   keeps the raw output and the reason on the attempt row and schedules the next attempt, like
   any parse failure. On the **last** attempt a non-empty output is kept anyway, with the
   reason in ``lN_length_note``, because a slightly long summary is more useful to the
   researcher than a hole (and the note keeps it auditable); an empty output is never kept;
3. store the output (summary prefix stripped) and the request id with one conditional bulk
   ``UPDATE ... WHERE lN IS NULL``, so a result applied twice (redelivery, an orphan retried
   while its first attempt still answered) never overwrites the first stored output.

Exhaustion needs no handling: a stage's failures are derived (eligible, not completed, nothing
pending), see ``evidence.selectors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from evidence.models import Evidence
from evidence.prompts import TransformStage, check_transform_output, strip_summary_prefix
from orchestration.models import LlmRequest
from orchestration.transport.registry import AppliedResult, ExhaustedKey, Rejection
from orchestration.transport.sql import update_from_rows

PREFIX = "evidence"
PARSE = "parse"
SOURCE_FIELD: dict[str, str] = {
    "l1_cleaned": "l0_raw",
    "l2_neutralized": "l1_cleaned",
    "l3_abstracted": "l2_neutralized",
}
REQUEST_FIELD: dict[str, str] = {
    "l1_cleaned": "l1_request_id",
    "l2_neutralized": "l2_request_id",
    "l3_abstracted": "l3_request_id",
}
NOTE_FIELD: dict[str, str] = {
    "l1_cleaned": "l1_length_note",
    "l2_neutralized": "l2_length_note",
    "l3_abstracted": "l3_length_note",
}
NOTE_MAX = 300


def evidence_key(evidence_id: int, stage: str) -> str:
    """The request identity of one transform (DOMAIN.md 2: identity keys)."""
    return f"{PREFIX}:{evidence_id}:{stage}"


def parse_evidence_key(custom_key: str) -> tuple[int, str]:
    """``evidence:<id>:<stage>`` -> ``(id, stage)``; ValueError for anything else."""
    prefix, raw_id, stage = custom_key.split(":", 2)
    if prefix != PREFIX or stage not in SOURCE_FIELD:
        raise ValueError(f"not an evidence transform key: {custom_key!r}")
    return int(raw_id), stage


class EvidenceHandler:
    """The transport's :class:`~orchestration.transport.registry.ResultHandler` for evidence."""

    def apply(self, results: Sequence[AppliedResult]) -> dict[int, Rejection]:
        rejections: dict[int, Rejection] = {}
        parsed: list[tuple[AppliedResult, int, str]] = []
        for result in results:
            try:
                evidence_id, stage = parse_evidence_key(result.custom_key)
            except ValueError as exc:
                rejections[result.request_id] = Rejection("permanent", str(exc))
                continue
            parsed.append((result, evidence_id, stage))
        if not parsed:
            return rejections
        sources = {
            row["id"]: row
            for row in Evidence.objects.filter(pk__in={eid for _, eid, _ in parsed}).values(
                "id", "l0_raw", "l1_cleaned", "l2_neutralized"
            )
        }
        max_attempts = dict(
            LlmRequest.objects.filter(pk__in=[r.request_id for r, _, _ in parsed]).values_list(
                "id", "max_attempts"
            )
        )
        updates: dict[str, list[tuple[int, str, int, str]]] = {s: [] for s in SOURCE_FIELD}
        for result, evidence_id, stage in parsed:
            row = sources.get(evidence_id)
            source = row.get(SOURCE_FIELD[stage]) if row is not None else None
            if row is None or source is None:
                reason = f"evidence {evidence_id} is gone or has no {SOURCE_FIELD[stage]}"
                rejections[result.request_id] = Rejection("permanent", reason)
                continue
            typed_stage = cast("TransformStage", stage)
            output = result.output_text or ""
            violation = check_transform_output(typed_stage, str(source), output)
            text = strip_summary_prefix(typed_stage, output)
            note = ""
            if violation is not None:
                last = result.attempt_index >= max_attempts.get(result.request_id, 1)
                if not last or not text:
                    rejections[result.request_id] = Rejection(PARSE, violation)
                    continue
                note = f"kept on attempt {result.attempt_index}: {violation}"[:NOTE_MAX]
            updates[stage].append((evidence_id, text, result.request_id, note))
        for stage, rows in updates.items():
            if not rows:
                continue
            # Two results for one evidence row in one chunk: the first wins (as in the table).
            first: dict[int, tuple[int, str, int, str]] = {}
            for row_update in rows:
                first.setdefault(row_update[0], row_update)
            update_from_rows(
                table="evidence_evidence",
                columns=[
                    ("id", "bigint"),
                    (stage, "text"),
                    (REQUEST_FIELD[stage], "bigint"),
                    (NOTE_FIELD[stage], "text"),
                ],
                rows=list(first.values()),
                where=f"t.{stage} IS NULL",
                returning_ids=False,
            )
        return rejections

    def exhausted(self, keys: Sequence[ExhaustedKey]) -> None:
        """Nothing to store: failures are derived from evidence and attempt rows."""
