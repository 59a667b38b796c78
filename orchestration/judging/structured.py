"""Structured (JSON-schema) outputs for the run stages, with the line parsers as fallback.

Why: regex over free text is the original engine's top failure class (DOMAIN.md, "where the
original is weak" #10). Where a provider supports schema-constrained output, the request can
carry one of the schemas below; the reply is then a JSON object whose shape is guaranteed and
whose *meaning* is checked here with the same rules as the line parsers (criteria and stage
counts, case-sensitive identifiers, the abstain policy, non-empty reasoning). Anything that is
not such an object (a provider without structured output, or a model that ignored it) goes to
the line parser unchanged, so one code path handles both and stored results have one shape.

We deliberately offer no "lenient" line-parsing mode: leniency belongs in the output format,
not in guessing what free text meant (see the parsers module docstring).

Schemas follow OpenAI strict mode: every property required, ``additionalProperties: false``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from orchestration.judging.parsers import (
    MAX_CRITERIA,
    MIN_CRITERIA,
    ExpertAgreementParse,
    ParseError,
    QualityParse,
    RubricParse,
    RubricStage,
    ScoringMethod,
    VerdictParse,
    parse_expert_agreement,
    parse_quality,
    parse_rubric,
    parse_verdict,
)

JsonObject = dict[str, Any]


def _object(properties: JsonObject) -> JsonObject:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_REASONING = {
    "type": "string",
    "description": "Step-by-step reasoning, written before the answer fields.",
}
_PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}


def rubric_json_schema(*, scale_size: int) -> JsonObject:
    stage = _object(
        {
            "label": {"type": "string"},
            "criteria": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": MIN_CRITERIA,
                "maxItems": 5,
            },
        }
    )
    return _object(
        {
            "reasoning": _REASONING,
            "stages": {
                "type": "array",
                "items": stage,
                "minItems": scale_size,
                "maxItems": scale_size,
            },
        }
    )


def quality_json_schema() -> JsonObject:
    return _object(
        {"reasoning": _REASONING, "observability": _PROBABILITY, "discriminability": _PROBABILITY}
    )


def verdict_json_schema(
    *, method: ScoringMethod, identifiers: Sequence[str], abstain_enabled: bool
) -> JsonObject:
    """``identifiers`` are the displayed stage identifiers (an enum, so typos are impossible)."""
    items: JsonObject = {"type": "array", "items": {"type": "string", "enum": list(identifiers)}}
    items["minItems"] = 0 if abstain_enabled else 1
    if method == "single":
        items["maxItems"] = 1
    properties: JsonObject = {"reasoning": _REASONING}
    if abstain_enabled:
        properties["abstain"] = {"type": "boolean"}
    properties["identifiers"] = items
    return _object(properties)


def expert_agreement_json_schema() -> JsonObject:
    return _object({"reasoning": _REASONING, "expert_agreement": _PROBABILITY})


def openai_response_format(name: str, schema: JsonObject) -> JsonObject:
    """The ``response_format`` value for OpenAI chat completions / batch bodies."""
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _as_object(output: str | Mapping[str, Any]) -> Mapping[str, Any] | None:
    if isinstance(output, Mapping):
        return output
    text = output.strip()
    if not text.startswith("{"):
        return None
    try:
        decoded = json.loads(text)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _reasoning(obj: Mapping[str, Any], marker: str) -> str:
    reasoning = str(obj["reasoning"]).strip()
    if not reasoning:
        raise ParseError(f"Missing reasoning before {marker}", kind="missing_reasoning")
    return reasoning


def _text_of(output: str | Mapping[str, Any]) -> str:
    if isinstance(output, Mapping):
        raise ParseError(
            f"Invalid structured output: {json.dumps(output)[:200]}", kind="missing_marker"
        )
    return output


def parse_structured_rubric(output: str | Mapping[str, Any], *, scale_size: int) -> RubricParse:
    obj = _as_object(output)
    stages_raw = obj.get("stages") if obj is not None else None
    if (
        obj is None
        or not isinstance(obj.get("reasoning"), str)
        or not isinstance(stages_raw, list)
        or not all(
            isinstance(s, dict)
            and isinstance(s.get("label"), str)
            and _is_str_list(s.get("criteria"))
            for s in stages_raw
        )
    ):
        return parse_rubric(_text_of(output), scale_size=scale_size)
    reasoning = _reasoning(obj, "RUBRIC block")
    stages: list[RubricStage] = []
    for number, raw in enumerate(stages_raw, start=1):
        label = raw["label"].strip()
        criteria = [c.strip() for c in raw["criteria"] if c.strip()]
        if not MIN_CRITERIA <= len(criteria) <= MAX_CRITERIA:
            raise ParseError(
                f'Invalid criteria count ({len(criteria)}) for stage "{label}"',
                kind="criteria_count",
            )
        stages.append(RubricStage(stage_number=number, label=label, criteria=criteria))
    if len(stages) != scale_size:
        raise ParseError(
            f"Expected {scale_size} stages, received {len(stages)}", kind="stage_count"
        )
    return RubricParse(reasoning=reasoning, stages=stages)


def parse_structured_quality(output: str | Mapping[str, Any]) -> QualityParse:
    obj = _as_object(output)
    if (
        obj is None
        or not isinstance(obj.get("reasoning"), str)
        or not _is_number(obj.get("observability"))
        or not _is_number(obj.get("discriminability"))
    ):
        return parse_quality(_text_of(output))
    return QualityParse(
        observability_score=min(1.0, max(0.0, float(obj["observability"]))),
        discriminability_score=min(1.0, max(0.0, float(obj["discriminability"]))),
        reasoning=_reasoning(obj, "QUALITY line"),
    )


def parse_structured_verdict(
    output: str | Mapping[str, Any],
    *,
    method: ScoringMethod,
    label_mapping: Mapping[str, int],
    abstain_enabled: bool | None,
) -> VerdictParse:
    """Same decoding rules as ``parse_verdict``: exact identifiers, the abstain policy."""
    obj = _as_object(output)
    abstain = obj.get("abstain", False) if obj is not None else False
    if (
        obj is None
        or not isinstance(obj.get("reasoning"), str)
        or not _is_str_list(obj.get("identifiers"))
        or not isinstance(abstain, bool)
    ):
        return parse_verdict(
            _text_of(output),
            method=method,
            label_mapping=label_mapping,
            abstain_enabled=abstain_enabled,
        )
    identifiers: list[str] = obj["identifiers"]
    if abstain or not identifiers:
        if identifiers:
            raise ParseError(
                f"Failed to parse verdict tokens: abstain with identifiers {identifiers}",
                kind="invalid_token",
            )
        if abstain_enabled is False:
            raise ParseError("Abstain not permitted by config", kind="abstain_not_permitted")
        return VerdictParse(
            raw_verdict="ABSTAIN",
            decoded_scores=None,
            abstained=True,
            justification=_reasoning(obj, "VERDICT line"),
        )
    if method == "single" and len(identifiers) != 1:
        raise ParseError(
            f"Failed to parse verdict token: expected one identifier, got {identifiers}",
            kind="invalid_token",
        )
    decoded: list[int] = []
    for identifier in identifiers:
        stage = label_mapping.get(identifier)
        if stage is None:
            raise ParseError(f"Unrecognized verdict label: {identifier}", kind="unrecognized_label")
        decoded.append(stage)
    return VerdictParse(
        raw_verdict=", ".join(identifiers),
        decoded_scores=decoded,
        abstained=False,
        justification=_reasoning(obj, "VERDICT line"),
    )


def parse_structured_expert_agreement(output: str | Mapping[str, Any]) -> ExpertAgreementParse:
    obj = _as_object(output)
    if (
        obj is None
        or not isinstance(obj.get("reasoning"), str)
        or not _is_number(obj.get("expert_agreement"))
    ):
        return parse_expert_agreement(_text_of(output))
    return ExpertAgreementParse(
        expert_agreement_prob=min(1.0, max(0.0, float(obj["expert_agreement"]))),
        reasoning=_reasoning(obj, "EXPERT_AGREEMENT line"),
    )
