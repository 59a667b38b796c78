"""Every parser vector in shared/conformance/judge_gym_parser_cases.json, one test per case.

``cases`` come from judge-gym's own test suites (plus one temporal-migration case, checked
against main's behaviour as recorded in ``main_behaviour``); ``derived_cases`` cover each
acceptance rule. For ``cases`` the full ``reference_output`` of the TypeScript parser is also
asserted, because that is what a faithful port returns (exact criteria strings included).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from orchestration.judging.parsers import (
    ParseError,
    parse_expert_agreement,
    parse_quality,
    parse_rubric,
    parse_verdict,
)

# Same location as the ``conformance_dir`` fixture in tests/conftest.py; parametrisation needs
# the data at collection time, before fixtures exist.
CASES_FILE = (
    Path(__file__).resolve().parents[3] / "shared" / "conformance" / "judge_gym_parser_cases.json"
)


def _load() -> dict[str, Any]:
    if not CASES_FILE.is_file():
        raise RuntimeError(f"conformance data not found at {CASES_FILE}")
    data: dict[str, Any] = json.loads(CASES_FILE.read_text(encoding="utf-8"))
    return data


DATA = _load()
CASES: list[dict[str, Any]] = DATA["cases"]
DERIVED: list[dict[str, Any]] = DATA["derived_cases"]


def run_parser(case: dict[str, Any]) -> dict[str, Any]:
    config = case["config"]
    text = case["output_text"]
    stage = case["stage"]
    result: Any
    if stage == "rubric_gen":
        result = parse_rubric(text, scale_size=config["scale_size"])
    elif stage == "rubric_critic":
        result = parse_quality(text)
    elif stage == "score_gen":
        result = parse_verdict(
            text,
            method=config["method"],
            label_mapping=config["label_mapping"],
            abstain_enabled=config["abstain_enabled"],  # null -> policy not applied
        )
    elif stage == "score_critic":
        result = parse_expert_agreement(text)
    else:  # pragma: no cover - data error
        raise AssertionError(f"unknown stage {stage}")
    as_dict: dict[str, Any] = dataclasses.asdict(result)
    return as_dict


_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\.")


def resolve(result: Any, path: str) -> Any:
    """Evaluate ``stages[2].criteria``-style paths against the result dict."""
    value = result
    pos = 0
    while pos < len(path):
        match = _PATH_PART.match(path, pos)
        assert match is not None, f"bad path {path!r}"
        name, index = match.group(1), match.group(2)
        if name is not None:
            value = value[name]
        elif index is not None:
            value = value[int(index)]
        pos = match.end()
    return value


def deep_equal(actual: Any, expected: Any) -> bool:
    """JSON deep equality where numbers compare as floats (1 == 1.0)."""
    numeric = (int, float)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, numeric) and isinstance(actual, numeric):
        return float(actual) == float(expected)
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(deep_equal(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(deep_equal(actual[k], expected[k]) for k in expected)
        )
    return bool(actual == expected)


def check_expect(result: dict[str, Any], expect: dict[str, Any]) -> None:
    for path, matcher in expect.items():
        value = resolve(result, path)
        if isinstance(matcher, dict) and "$len" in matcher:
            assert isinstance(value, list), f"{path}: {value!r} is not a list"
            assert len(value) == matcher["$len"], f"{path}: len {len(value)} != {matcher['$len']}"
        elif isinstance(matcher, dict) and "$contains" in matcher:
            assert isinstance(value, str), f"{path}: {value!r} is not a string"
            assert matcher["$contains"] in value, (
                f"{path}: {value!r} lacks {matcher['$contains']!r}"
            )
        else:
            assert deep_equal(value, matcher), f"{path}: {value!r} != {matcher!r}"


def check_outcome(case: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any] | None:
    """Assert an ``{expect, expect_error, error_like}`` outcome; return the result on success."""
    if outcome["expect_error"]:
        with pytest.raises(ParseError) as excinfo:
            run_parser(case)
        error_like = outcome.get("error_like")
        if error_like:
            assert str(excinfo.value).startswith(error_like), (
                f"message {str(excinfo.value)!r} does not start with {error_like!r}"
            )
        return None
    result = run_parser(case)
    check_expect(result, outcome.get("expect") or {})
    return result


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_project_case(case: dict[str, Any]) -> None:
    if case.get("branch") == "temporal-migration":
        # We implement main; assert what main does with the same input.
        check_outcome(case, case["main_behaviour"])
        return
    result = check_outcome(case, case)
    assert result is not None
    assert deep_equal(result, case["reference_output"]), (
        f"result {result!r} differs from reference {case['reference_output']!r}"
    )


@pytest.mark.parametrize("case", DERIVED, ids=[c["id"] for c in DERIVED])
def test_derived_case(case: dict[str, Any]) -> None:
    result = check_outcome(case, case)
    if result is not None:
        # Derived ``expect`` is always the complete result.
        assert deep_equal(result, case["expect"])


def test_every_case_is_collected() -> None:
    ids = [c["id"] for c in CASES + DERIVED]
    assert len(ids) == len(set(ids)) == 94
