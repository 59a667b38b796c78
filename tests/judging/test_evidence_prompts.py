"""Window transform prompts (evidence/prompts.py): modes, truncation, prefixes, length checks."""

from __future__ import annotations

import pytest

from evidence.prompts import (
    MAX_STAGE_INPUT_CHARS,
    PROMPT_VERSIONS,
    check_length_invariant,
    check_transform_output,
    has_summary_prefix,
    l2_mode,
    prompt_task_id,
    strip_summary_prefix,
    transform_prompt,
)

PROSE = " ".join(
    f"Officials in the capital announced measure number {i} on Tuesday." for i in range(80)
)
TABLE = "\n".join(
    ["| Question | Yes | No | Unsure |", "|---|---|---|---|"]
    + [f"| Do you trust institution {i}? | {30 + i}% | {50 - i}% | 20% |" for i in range(60)]
)


def test_versions_and_markers() -> None:
    assert PROMPT_VERSIONS == {
        "l1_clean": "l1_clean@v1",
        "l2_neutralize": "l2_neutralize@v1",
        "l3_abstract": "l3_abstract@v1",
    }
    l1 = transform_prompt("l1_cleaned", "Headline\n\nBody.")
    l2 = transform_prompt("l2_neutralized", "Body text.")
    l3 = transform_prompt("l3_abstracted", "Neutralized Summary:\nBody text.")
    assert prompt_task_id(l1.system, l1.user) == ("l1_clean", {})
    assert prompt_task_id(l2.system, l2.user) == ("l2_neutralize", {"mode": "default"})
    assert prompt_task_id(l3.system, l3.user) == ("l3_abstract", {})
    assert (l1.version, l2.version, l3.version) == (
        "l1_clean@v1",
        "l2_neutralize@v1",
        "l3_abstract@v1",
    )


def test_system_prompts_are_constant_per_stage() -> None:
    # Rules in the system prompt, text in the user prompt: system prompts de-duplicate.
    for stage in ("l1_cleaned", "l2_neutralized", "l3_abstracted"):
        a = transform_prompt(stage, "First article body.")
        b = transform_prompt(stage, "A different article body entirely.")
        assert a.system == b.system
        assert "First article body." in a.user
        assert "First article body." not in a.system
        assert "<input_text>\nFirst article body.\n</input_text>" in a.user


def test_reply_prefix_instructions() -> None:
    assert (
        'Start your reply with "Neutralized Summary:"'
        in transform_prompt("l2_neutralized", "x").user
    )
    assert (
        'Start your reply with "Abstracted Summary:"' in transform_prompt("l3_abstracted", "x").user
    )
    l1 = transform_prompt("l1_cleaned", "x")
    assert "Summary:" not in l1.user
    assert "If you are unsure" in l1.system
    l3 = transform_prompt("l3_abstracted", "x")
    for token in ("EXECUTIVE_LEADER", "COUNTRY_A", "PARTY_A", "NEWS_OUTLET_A"):
        assert token in l3.system


def test_input_truncated_to_20k() -> None:
    text = "a" * (MAX_STAGE_INPUT_CHARS + 500)
    prompt = transform_prompt("l1_cleaned", text)
    assert "a" * MAX_STAGE_INPUT_CHARS + "\n</input_text>" in prompt.user
    assert "a" * (MAX_STAGE_INPUT_CHARS + 1) not in prompt.user


def test_l3_input_drops_l2_prefix() -> None:
    prompt = transform_prompt("l3_abstracted", "Neutralized Summary:\nThe minister resigned.")
    assert "<input_text>\nThe minister resigned.\n</input_text>" in prompt.user


def test_l2_mode_detection() -> None:
    assert l2_mode("Short article.") == "default"
    assert len(PROSE.split()) >= 450
    assert l2_mode(PROSE) == "default"  # long but not survey-shaped
    assert l2_mode(TABLE) == "long_survey"
    assert l2_mode(TABLE[:400]) == "default"  # table-shaped but short
    percents = " ".join(f"Support stood at {i}% in region {i}." for i in range(500))
    assert l2_mode(percents) == "long_survey"


def test_long_survey_prompt() -> None:
    prompt = transform_prompt("l2_neutralized", TABLE)
    assert prompt_task_id(prompt.system, prompt.user) == ("l2_neutralize", {"mode": "long_survey"})
    assert "8-14 concise bullets" in prompt.system
    assert "45%-70%" in prompt.system
    default = transform_prompt("l2_neutralized", PROSE)
    assert "80%-95%" in default.system
    assert "bullets" not in default.system


@pytest.mark.parametrize(
    ("stage", "output", "expected"),
    [
        ("l2_neutralized", "Neutralized Summary:\n body ", "body"),
        ("l2_neutralized", "**Neutralized Summary:** body", "body"),
        ("l2_neutralized", "neutralized summary: body", "body"),
        ("l2_neutralized", "body without prefix", "body without prefix"),
        ("l3_abstracted", "Abstracted Summary:\nCOUNTRY_A voted.", "COUNTRY_A voted."),
        ("l3_abstracted", "Neutralized Summary: x", "Neutralized Summary: x"),
        ("l1_cleaned", "  cleaned  ", "cleaned"),
    ],
)
def test_strip_summary_prefix(stage: str, output: str, expected: str) -> None:
    assert strip_summary_prefix(stage, output) == expected  # type: ignore[arg-type]


def test_has_summary_prefix() -> None:
    assert has_summary_prefix("l2_neutralized", "Neutralized Summary: x")
    assert not has_summary_prefix("l2_neutralized", "Summary: x")
    assert has_summary_prefix("l1_cleaned", "anything")


def _body(source: str, ratio: float) -> str:
    return "x" * round(len(source) * ratio)


@pytest.mark.parametrize(
    ("ratio", "ok"), [(0.80, True), (0.87, True), (0.95, True), (0.78, False), (0.97, False)]
)
def test_l2_default_band(ratio: float, ok: bool) -> None:
    source = "y" * 1000
    output = "Neutralized Summary:\n" + _body(source, ratio)  # prefix is not counted
    reason = check_length_invariant("l2_neutralized", source, output)
    assert (reason is None) is ok, reason
    if not ok:
        assert reason is not None
        assert "expected 80%-95%" in reason


@pytest.mark.parametrize(
    ("ratio", "ok"), [(0.46, True), (0.60, True), (0.69, True), (0.85, False), (0.40, False)]
)
def test_l2_long_survey_band(ratio: float, ok: bool) -> None:
    output = "Neutralized Summary:\n" + _body(TABLE, ratio)
    reason = check_length_invariant("l2_neutralized", TABLE, output)
    assert (reason is None) is ok, reason
    if not ok:
        assert reason is not None
        assert "long-survey" in reason


@pytest.mark.parametrize(("ratio", "ok"), [(0.10, True), (0.90, True), (0.92, False)])
def test_l3_cap(ratio: float, ok: bool) -> None:
    source = "Neutralized Summary:\n" + "z" * 1000  # L2 as stored, prefix included
    output = "Abstracted Summary:\n" + "w" * round(1000 * ratio)
    assert (check_length_invariant("l3_abstracted", source, output) is None) is ok


def test_l1_never_longer_than_source() -> None:
    assert check_length_invariant("l1_cleaned", "abc def", "abc") is None
    assert check_length_invariant("l1_cleaned", "abc", "abcd") is not None


def test_empty_texts_are_violations() -> None:
    assert "empty" in (check_length_invariant("l2_neutralized", "", "x") or "")
    assert "empty" in (
        check_length_invariant("l2_neutralized", "abc", "Neutralized Summary:") or ""
    )


def test_length_measured_against_truncated_source() -> None:
    source = "s" * (MAX_STAGE_INPUT_CHARS * 2)
    output = "Neutralized Summary:\n" + "o" * int(MAX_STAGE_INPUT_CHARS * 0.9)
    assert check_length_invariant("l2_neutralized", source, output) is None


def test_check_transform_output() -> None:
    source = "q" * 100
    assert check_transform_output("l2_neutralized", source, "q" * 90) is not None  # no prefix
    assert (
        check_transform_output("l2_neutralized", source, "Neutralized Summary: " + "q" * 90) is None
    )
    assert "wrapped" in (check_transform_output("l1_cleaned", source, '{"body": "q"}') or "")
    assert "wrapped" in (check_transform_output("l1_cleaned", source, "```\nq\n```") or "")
    assert check_transform_output("l1_cleaned", '{"a": 1} article', '{"a": 1}') is None
    assert "empty" in (check_transform_output("l3_abstracted", source, "   ") or "")
