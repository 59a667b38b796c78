"""JavaScript-semantics edge cases of the parsers, and robustness on arbitrary text.

Expected values come from executing the reference rules in Node (the conformance vectors do
not exercise these): ECMAScript whitespace for trim/``\\s``, ``^`` after CR/LS/PS in the
VERDICT regex, ASCII-only case folding of markers, and JS ``.`` excluding CR.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.judging.parsers import (
    ParseError,
    ScoringMethod,
    parse_expert_agreement,
    parse_quality,
    parse_rubric,
    parse_verdict,
)


def test_bom_is_trimmed_like_js() -> None:
    parsed = parse_verdict(
        "Reason.\nVERDICT: B\ufeff", method="single", label_mapping={"B": 2}, abstain_enabled=True
    )
    assert parsed.decoded_scores == [2]


def test_nel_is_not_whitespace_in_js() -> None:
    with pytest.raises(ParseError, match="Unrecognized verdict label: B\x85"):
        parse_verdict(
            "Reason.\nVERDICT: B\x85", method="subset", label_mapping={"B": 2}, abstain_enabled=True
        )


@pytest.mark.parametrize("separator", ["\r", "\u2028"])
def test_verdict_line_start_after_other_line_terminators(separator: str) -> None:
    parsed = parse_verdict(
        f"Reason.{separator}VERDICT: C",
        method="single",
        label_mapping={"C": 3},
        abstain_enabled=True,
    )
    assert parsed.decoded_scores == [3]
    assert parsed.justification == "Reason."


def test_markers_fold_ascii_only() -> None:
    with pytest.raises(ParseError, match="Failed to parse QUALITY line"):
        parse_quality("R.\nQUALITY: ob\u017fervability=0.5, discriminability=0.5")


def test_carriage_return_inside_stage_line_is_invalid() -> None:
    with pytest.raises(ParseError, match="Invalid rubric line: 1\\) L :: a\rb; c; d"):
        parse_rubric("R.\nRUBRIC:\n1) L :: a\rb; c; d\n", scale_size=1)


def test_comma_pieces_are_cleaned_twice() -> None:
    parsed = parse_rubric("R.\nRUBRIC:\n1) L :: and or x, y, z\n", scale_size=1)
    assert parsed.stages[0].criteria == ["x", "y", "z"]


def test_unicode_uppercase_in_unmapped_subset() -> None:
    parsed = parse_verdict(
        "Reason.\nVERDICT: \u0131", method="subset", label_mapping=None, abstain_enabled=True
    )
    assert parsed.decoded_scores == [9]  # dotless i upper-cases to I, as in JS


def test_prototype_names_are_not_labels() -> None:
    # The original's plain-object lookup resolved this to Object.prototype.constructor.
    with pytest.raises(ParseError, match="Unrecognized verdict label: constructor"):
        parse_verdict(
            "Reason.\nVERDICT: constructor",
            method="single",
            label_mapping={"A": 1},
            abstain_enabled=True,
        )


def test_error_kinds_and_long_outputs_are_previewed() -> None:
    with pytest.raises(ParseError) as excinfo:
        parse_rubric("x" * 5000, scale_size=4)
    assert excinfo.value.kind == "missing_marker"
    assert len(str(excinfo.value)) < 300
    with pytest.raises(ParseError) as excinfo:
        parse_verdict(
            "R.\nVERDICT: ABSTAIN", method="single", label_mapping={"A": 1}, abstain_enabled=False
        )
    assert excinfo.value.kind == "abstain_not_permitted"


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="Unknown scoring method"):
        parse_verdict("R.\nVERDICT: A", method="ranked", label_mapping=None, abstain_enabled=None)  # type: ignore[arg-type]


_ALPHABET = st.sampled_from(
    [
        *list("AB b,;:/[]()`'\"-*.\n\r\t=01"),
        "VERDICT:",
        "RUBRIC:\n",
        "1) ",
        " :: ",
        "QUALITY:",
        "EXPERT_AGREEMENT:",
        "\u2028",
        "\ufeff",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=60).map("".join), st.sampled_from(["single", "subset"]))
def test_only_parse_errors_escape(text: str, method: ScoringMethod) -> None:
    """Whatever the model writes, the parsers either return a result or raise ParseError."""
    for parse in (
        lambda: parse_rubric(text, scale_size=2),
        lambda: parse_quality(text),
        lambda: parse_expert_agreement(text),
        lambda: parse_verdict(
            text, method=method, label_mapping={"A": 1, "B": 2}, abstain_enabled=False
        ),
        lambda: parse_verdict(text, method=method, label_mapping=None, abstain_enabled=None),
    ):
        with contextlib.suppress(ParseError):
            parse()
