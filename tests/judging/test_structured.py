"""Structured outputs: schemas validate the intended shapes; parsing falls back to line parsers."""

from __future__ import annotations

import json

import jsonschema
import pytest

from orchestration.judging.parsers import ParseError
from orchestration.judging.structured import (
    expert_agreement_json_schema,
    openai_response_format,
    parse_structured_expert_agreement,
    parse_structured_quality,
    parse_structured_rubric,
    parse_structured_verdict,
    quality_json_schema,
    rubric_json_schema,
    verdict_json_schema,
)

MAPPING = {"QBIqOe": 1, "3ClBYt": 2, "Tdqasf": 3}


def _strict(schema: dict[str, object]) -> None:
    """OpenAI strict mode: every object lists all properties as required, no extras."""
    if schema.get("type") == "object":
        props = schema["properties"]
        assert isinstance(props, dict)
        assert schema["required"] == list(props)
        assert schema["additionalProperties"] is False
        for sub in props.values():
            _strict(sub)
    if schema.get("type") == "array":
        _strict(schema["items"])  # type: ignore[arg-type]


def test_schemas_are_valid_and_strict() -> None:
    schemas = [
        rubric_json_schema(scale_size=4),
        quality_json_schema(),
        verdict_json_schema(method="subset", identifiers=list(MAPPING), abstain_enabled=True),
        verdict_json_schema(method="single", identifiers=list(MAPPING), abstain_enabled=False),
        expert_agreement_json_schema(),
    ]
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)
        _strict(schema)
    wrapped = openai_response_format("verdict", schemas[2])
    assert wrapped["json_schema"]["strict"] is True


def test_verdict_schema_constraints() -> None:
    single = verdict_json_schema(method="single", identifiers=list(MAPPING), abstain_enabled=False)
    jsonschema.validate({"reasoning": "r", "identifiers": ["QBIqOe"]}, single)
    for bad in (
        {"reasoning": "r", "identifiers": []},
        {"reasoning": "r", "identifiers": ["QBIqOe", "Tdqasf"]},
        {"reasoning": "r", "identifiers": ["qbiqoe"]},
        {"reasoning": "r", "identifiers": ["QBIqOe"], "abstain": False},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, single)
    subset = verdict_json_schema(method="subset", identifiers=list(MAPPING), abstain_enabled=True)
    jsonschema.validate({"reasoning": "r", "abstain": True, "identifiers": []}, subset)


def test_structured_verdict() -> None:
    parsed = parse_structured_verdict(
        json.dumps({"reasoning": "Because.", "identifiers": ["Tdqasf", "QBIqOe"]}),
        method="subset",
        label_mapping=MAPPING,
        abstain_enabled=False,
    )
    assert parsed.decoded_scores == [3, 1]
    assert parsed.raw_verdict == "Tdqasf, QBIqOe"
    assert parsed.justification == "Because."
    abstained = parse_structured_verdict(
        {"reasoning": "Unclear.", "abstain": True, "identifiers": []},
        method="single",
        label_mapping=MAPPING,
        abstain_enabled=True,
    )
    assert abstained.abstained
    assert abstained.decoded_scores is None


@pytest.mark.parametrize(
    ("payload", "abstain_enabled", "message"),
    [
        ({"reasoning": "r", "abstain": True, "identifiers": []}, False, "Abstain not permitted"),
        ({"reasoning": "r", "identifiers": ["qbiqoe"]}, True, "Unrecognized verdict label: qbiqoe"),
        ({"reasoning": " ", "identifiers": ["QBIqOe"]}, True, "Missing reasoning before VERDICT"),
        ({"reasoning": "r", "abstain": True, "identifiers": ["QBIqOe"]}, True, "Failed to parse"),
    ],
)
def test_structured_verdict_rules(
    payload: dict[str, object], abstain_enabled: bool, message: str
) -> None:
    with pytest.raises(ParseError, match=message):
        parse_structured_verdict(
            payload, method="subset", label_mapping=MAPPING, abstain_enabled=abstain_enabled
        )


def test_single_needs_exactly_one() -> None:
    with pytest.raises(ParseError, match="expected one identifier"):
        parse_structured_verdict(
            {"reasoning": "r", "identifiers": ["QBIqOe", "Tdqasf"]},
            method="single",
            label_mapping=MAPPING,
            abstain_enabled=True,
        )


def test_fallback_to_line_parsers() -> None:
    verdict = parse_structured_verdict(
        "Reasoning.\nVERDICT: 3ClBYt", method="single", label_mapping=MAPPING, abstain_enabled=True
    )
    assert verdict.decoded_scores == [2]
    assert (
        parse_structured_quality(
            "Ok.\nQUALITY: observability=0.5, discriminability=0.25"
        ).discriminability_score
        == 0.25
    )
    assert (
        parse_structured_expert_agreement("Ok.\nEXPERT_AGREEMENT: 0.4").expert_agreement_prob == 0.4
    )
    rubric = parse_structured_rubric("R.\nRUBRIC:\n1) L :: a; b; c\n2) H :: d; e; f", scale_size=2)
    assert [s.label for s in rubric.stages] == ["L", "H"]
    # A JSON object of the wrong shape goes to the line parser, which rejects it.
    with pytest.raises(ParseError, match="Failed to parse verdict line"):
        parse_structured_verdict(
            '{"verdict": "B"}', method="single", label_mapping=MAPPING, abstain_enabled=True
        )
    with pytest.raises(ParseError, match="Invalid structured output"):
        parse_structured_quality({"quality": 1})


def test_structured_rubric_quality_agreement() -> None:
    rubric = parse_structured_rubric(
        {
            "reasoning": "Designed from cues.",
            "stages": [
                {"label": "Low", "criteria": ["a", "b", "c"]},
                {"label": "High", "criteria": ["d", " e ", "f", ""]},
            ],
        },
        scale_size=2,
    )
    assert rubric.stages[1].criteria == ["d", "e", "f"]
    assert rubric.stages[1].stage_number == 2
    with pytest.raises(ParseError, match="Expected 3 stages, received 2"):
        parse_structured_rubric(
            {"reasoning": "r", "stages": [{"label": "a", "criteria": ["1", "2", "3"]}] * 2},
            scale_size=3,
        )
    with pytest.raises(ParseError, match='Invalid criteria count \\(2\\) for stage "a"'):
        parse_structured_rubric(
            {"reasoning": "r", "stages": [{"label": "a", "criteria": ["1", "2"]}]}, scale_size=1
        )
    quality = parse_structured_quality(
        {"reasoning": "r", "observability": 1.5, "discriminability": 0.2}
    )
    assert quality.observability_score == 1.0
    agreement = parse_structured_expert_agreement('{"reasoning": "r", "expert_agreement": 0.7}')
    assert agreement.expert_agreement_prob == 0.7
    assert agreement.reasoning == "r"
