"""Parsers for the four run-stage outputs: RUBRIC, QUALITY, VERDICT and EXPERT_AGREEMENT.

Why a line-by-line port: parsed values are research data. A Python engine that accepted or
rejected different model outputs than judge-gym ``main`` (run_parsers.ts plus the abstain
policy in run_strategies.ts) would shift abstain and subset rates between the two engines, so
the acceptance rules follow shared/conformance/README.md section 2 exactly and every vector in
judge_gym_parser_cases.json is a test (tests/judging/test_parser_conformance.py).

JavaScript regex semantics are reproduced on purpose rather than approximated:

* ``\\s`` and ``String.prototype.trim`` use the ECMAScript whitespace set (``_WS_CHARS``),
  which differs from Python's ``str.isspace`` (JS has U+FEFF, lacks U+001C..U+001F and U+0085).
* Case-insensitive markers use ``re.ASCII | re.IGNORECASE``: JS without the ``u`` flag never
  folds non-ASCII letters onto ASCII (Python would match ``ſ`` for ``s``).
* JS ``$`` (no ``m`` flag) is end of input, so ``\\Z`` is used; JS ``.`` excludes CR, LS, PS.
* The VERDICT regex uses the ``m`` flag, where ``^`` also matches after CR, LS and PS.

Decisions where the ``temporal-migration`` branch is more lenient (README section 3): we keep
``main``'s behaviour everywhere.

* Subset tokens stay strict and case-sensitive. The temporal parser looks up every alphanumeric
  run case-insensitively and ignores unknown words, so prose silently mis-scores
  (``B and a bit of C`` -> stages [2, 1, 3], the article "a" read as stage A). A strict failure
  is harmless by comparison: the request is retried (up to max attempts) with the raw output
  and the error message kept, so nothing is lost and nothing is invented.
* Decorated markers (``**VERDICT:** B``, ``VERDICT : B``) stay rejected, and an empty
  ``VERDICT:`` line still takes its value from the next line: accepting more shapes here would
  make the two engines disagree on identical outputs. Providers that support structured output
  avoid the issue entirely (see ``orchestration.judging.structured``).
* Subset decoding keeps written order and duplicates (``D, A, D`` -> [4, 1, 4]); analysis can
  de-duplicate, but stored data should say what the model wrote.
* Abstaining when ``abstain_enabled`` is false is an error (the temporal worker accepted it).
  Passing ``abstain_enabled=None`` skips the policy, as the parser-level tests of ``main`` do.

One deliberate non-port: the original looked labels up with ``mapping[token]`` on a plain JS
object, so tokens such as ``constructor`` resolved to inherited prototype members. Here the
lookup is an exact dict lookup.

Error messages start with the reference phrases (the conformance ``error_like`` prefixes). The
original appended the whole raw output to "failed to find" messages; we append a short
preview, because the raw output is stored on the request row anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ScoringMethod = Literal["single", "subset"]

# ECMAScript WhiteSpace + LineTerminator: what JS `\s` matches and `trim()` removes.
_WS_BODY = r"\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_WS = f"[{_WS_BODY}]"
_WS_CHARS = (
    "\t\n\x0b\x0c\r \xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + ("\u2028\u2029\u202f\u205f\u3000\ufeff")
)
# JS `.` without the s flag: anything but LF, CR, LS, PS.
_DOT = r"[^\n\r\u2028\u2029]"
_CI = re.ASCII | re.IGNORECASE

_ERROR_PREVIEW_CHARS = 200


def _js_trim(text: str) -> str:
    return text.strip(_WS_CHARS)


def _preview(raw: str) -> str:
    if len(raw) <= _ERROR_PREVIEW_CHARS:
        return raw
    return raw[:_ERROR_PREVIEW_CHARS] + "…"


ParseErrorKind = Literal[
    "missing_marker",
    "missing_reasoning",
    "invalid_line",
    "criteria_count",
    "stage_count",
    "invalid_token",
    "unrecognized_label",
    "abstain_not_permitted",
]


class ParseError(ValueError):
    """A model output that breaks its stage's output contract.

    ``kind`` lets callers classify without matching message text; the message itself keeps
    the reference wording so logs and stored errors read the same as the original engine's.
    """

    def __init__(self, message: str, *, kind: ParseErrorKind) -> None:
        super().__init__(message)
        self.kind: ParseErrorKind = kind


# ---------------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RubricStage:
    stage_number: int
    label: str
    criteria: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RubricParse:
    reasoning: str
    stages: list[RubricStage]


@dataclass(frozen=True, slots=True)
class QualityParse:
    observability_score: float
    discriminability_score: float
    reasoning: str


@dataclass(frozen=True, slots=True)
class VerdictParse:
    """``decoded_scores`` is None when the model abstained (the engine stores ``[]``)."""

    raw_verdict: str
    decoded_scores: list[int] | None
    abstained: bool
    justification: str


@dataclass(frozen=True, slots=True)
class ExpertAgreementParse:
    expert_agreement_prob: float
    reasoning: str


# ---------------------------------------------------------------------------------------------
# rubric_gen
# ---------------------------------------------------------------------------------------------

# First line that is exactly "RUBRIC:" (plus trailing whitespace) at column 0; the block is
# the rest of the text and must be non-empty.
_RUBRIC_MARKER = re.compile(rf"(?:^|\n)RUBRIC:{_WS}*\n(.+)\Z", _CI | re.DOTALL)
_STAGE_LINE_START = re.compile(r"[0-9]+\)")
_STAGE_LINE = re.compile(rf"{_WS}*[0-9]+\){_WS}*({_DOT}+?){_WS}*::{_WS}*({_DOT}+)")
_LEADING_CONJUNCTION = re.compile(rf"^(?:and|or){_WS}+", _CI)

MIN_CRITERIA = 3
MAX_CRITERIA = 6


def parse_rubric(text: str, *, scale_size: int) -> RubricParse:
    """Parse ``reasoning`` + ``RUBRIC:`` + N lines ``k) Label :: c1; c2; c3``.

    Order of checks (first failure wins): marker, reasoning, any non-stage line, each stage
    line's shape and criteria count in order, then the stage count. Stages are renumbered
    1..N by position; the number the model wrote is ignored.
    """
    marker = _RUBRIC_MARKER.search(text)
    if marker is None:
        raise ParseError(f"Failed to find RUBRIC block: {_preview(text)}", kind="missing_marker")
    reasoning = _js_trim(text[: marker.start()])
    if not reasoning:
        raise ParseError("Missing reasoning before RUBRIC block", kind="missing_reasoning")

    lines = [_js_trim(line) for line in _js_trim(marker.group(1)).split("\n")]
    lines = [line for line in lines if line and line != "```"]
    for line in lines:
        if _STAGE_LINE_START.match(line) is None:
            raise ParseError(f"Invalid rubric line: {line}", kind="invalid_line")

    stages: list[RubricStage] = []
    for position, line in enumerate(lines, start=1):
        shape = _STAGE_LINE.fullmatch(line)
        if shape is None:
            raise ParseError(f"Invalid rubric line: {line}", kind="invalid_line")
        label = _js_trim(shape.group(1))
        criteria = _parse_criteria(shape.group(2))
        if not MIN_CRITERIA <= len(criteria) <= MAX_CRITERIA:
            raise ParseError(
                f'Invalid criteria count ({len(criteria)}) for stage "{label}"',
                kind="criteria_count",
            )
        stages.append(RubricStage(stage_number=position, label=label, criteria=criteria))

    if len(stages) != scale_size:
        raise ParseError(
            f"Expected {scale_size} stages, received {len(stages)}", kind="stage_count"
        )
    return RubricParse(reasoning=reasoning, stages=stages)


def _split_top_level(text: str, delimiter: str) -> list[str]:
    """Split on ``delimiter`` outside round and square brackets.

    Two independent depth counters; a closer only lowers a counter above zero, so an unclosed
    ``(`` protects the rest of the text (the reference behaviour, see D-RG-24).
    """
    parts: list[str] = []
    start = 0
    paren = bracket = 0
    for index, char in enumerate(text):
        if char == "(":
            paren += 1
        elif char == ")":
            paren = max(paren - 1, 0)
        elif char == "[":
            bracket += 1
        elif char == "]":
            bracket = max(bracket - 1, 0)
        elif char == delimiter and paren == 0 and bracket == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _clean_criterion(piece: str) -> str:
    return _js_trim(_LEADING_CONJUNCTION.sub("", _js_trim(piece), count=1))


def _parse_criteria(raw: str) -> list[str]:
    """Semicolons first; fall back to commas only when semicolons give fewer than three.

    The comma expansion is used only if it yields 3..6 pieces; otherwise the semicolon
    pieces are returned and fail the count check. As in the reference, comma pieces are
    cleaned twice (once by the split, once after flattening).
    """
    by_semicolon = [c for c in map(_clean_criterion, _split_top_level(raw, ";")) if c]
    if len(by_semicolon) >= MIN_CRITERIA:
        return by_semicolon
    by_comma = [
        cleaned
        for segment in by_semicolon
        for part in _split_top_level(segment, ",")
        if (cleaned := _clean_criterion(_clean_criterion(part)))
    ]
    if MIN_CRITERIA <= len(by_comma) <= MAX_CRITERIA:
        return by_comma
    return by_semicolon


# ---------------------------------------------------------------------------------------------
# rubric_critic
# ---------------------------------------------------------------------------------------------

_NUMBER = r"([01](?:\.[0-9]+)?)"
_QUALITY = re.compile(
    rf"QUALITY:{_WS}*observability{_WS}*={_WS}*{_NUMBER}[,{_WS_BODY}]+"
    rf"discriminability{_WS}*={_WS}*{_NUMBER}",
    _CI,
)


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


def parse_quality(text: str) -> QualityParse:
    """Last ``QUALITY: observability=<n>, discriminability=<n>`` anywhere in the text."""
    matches = list(_QUALITY.finditer(text))
    if not matches:
        raise ParseError(f"Failed to parse QUALITY line: {_preview(text)}", kind="missing_marker")
    last = matches[-1]
    reasoning = _js_trim(text[: last.start()])
    if not reasoning:
        raise ParseError("Missing reasoning before QUALITY line", kind="missing_reasoning")
    return QualityParse(
        observability_score=_clamp01(float(last.group(1))),
        discriminability_score=_clamp01(float(last.group(2))),
        reasoning=reasoning,
    )


# ---------------------------------------------------------------------------------------------
# score_gen
# ---------------------------------------------------------------------------------------------

# JS: /(?:^|\n)\s*(?:[-*]\s*)?VERDICT:\s*([^\n\r]*)/gim. The whitespace after the colon may
# cross line breaks, so a bare "VERDICT:" takes its value from the next non-blank line.
_VERDICT = re.compile(
    rf"(?:^|(?<=[\r\u2028\u2029])|\n){_WS}*(?:[-*]{_WS}*)?VERDICT:{_WS}*([^\n\r]*)",
    _CI | re.MULTILINE,
)
_BULLET = re.compile(rf"^[-*]{_WS}*")
_EDGE_BACKTICKS = re.compile(r"^`+|`+\Z")
_VERDICT_PREFIX = re.compile(rf"^VERDICT:{_WS}*", _CI)
_EDGE_QUOTE = re.compile(r"^[\"']|[\"']\Z")
_TRAILING_PUNCT = re.compile(r"[.;]+\Z")
_SUBSET_SEPARATORS = re.compile(rf"[,{_WS_BODY}/]+")
_FIRST_ALNUM = re.compile(r"[A-Za-z0-9]+")
_SINGLE_LETTER = re.compile(r"[A-Z]")


def _normalize_verdict(value: str, *, prefix_passes: int = 2) -> str:
    """The reference normalisation (README 2.3), in its exact order."""
    value = _js_trim(value)
    value = _BULLET.sub("", value, count=1)
    value = _EDGE_BACKTICKS.sub("", value)
    for _ in range(prefix_passes):
        value = _VERDICT_PREFIX.sub("", value, count=1)
    value = _EDGE_QUOTE.sub("", value)
    value = _TRAILING_PUNCT.sub("", value)
    return _js_trim(value)


def _last_verdict(text: str) -> tuple[str, int]:
    """Normalised value and start offset of the last VERDICT candidate."""
    last: re.Match[str] | None = None
    for last in _VERDICT.finditer(text):  # noqa: B007 - we want the final match
        pass
    if last is None:
        raise ParseError(f"Failed to parse verdict line: {_preview(text)}", kind="missing_marker")
    return _normalize_verdict(last.group(1)), last.start()


def _decode_single(line: str, label_mapping: Mapping[str, int] | None) -> VerdictParse:
    token_match = _FIRST_ALNUM.search(_normalize_verdict(line))
    if token_match is None:
        raise ParseError(f"Failed to parse verdict token: {line}", kind="invalid_token")
    token = token_match.group()
    if label_mapping is not None:
        decoded = label_mapping.get(token)
        if decoded is None:
            raise ParseError(f"Unrecognized verdict label: {token}", kind="unrecognized_label")
    else:
        # Fallback without a mapping: alphabet position, no range check (reference quirk).
        decoded = ord(token.upper()[0]) - 64
    return VerdictParse(
        raw_verdict=token, decoded_scores=[decoded], abstained=False, justification=""
    )


def _decode_subset(line: str, label_mapping: Mapping[str, int] | None) -> VerdictParse:
    cleaned = _normalize_verdict(line).replace("[", "").replace("]", "")
    tokens = [
        token
        for piece in _SUBSET_SEPARATORS.split(cleaned)
        if (token := _normalize_verdict(piece, prefix_passes=1))
    ]
    if not tokens:
        raise ParseError(f"Failed to parse verdict tokens: {line}", kind="invalid_token")
    decoded: list[int] = []
    if label_mapping is not None:
        for token in tokens:
            stage = label_mapping.get(token)
            if stage is None:
                raise ParseError(f"Unrecognized verdict label: {line}", kind="unrecognized_label")
            decoded.append(stage)
    else:
        for token in tokens:
            upper = token.upper()
            if _SINGLE_LETTER.fullmatch(upper):
                decoded.append(ord(upper) - 64)
        if not decoded:
            raise ParseError(f"Unrecognized verdict label: {line}", kind="unrecognized_label")
    return VerdictParse(raw_verdict=line, decoded_scores=decoded, abstained=False, justification="")


def parse_verdict(
    text: str,
    *,
    method: ScoringMethod,
    label_mapping: Mapping[str, int] | None,
    abstain_enabled: bool | None,
) -> VerdictParse:
    """Parse the last ``VERDICT:`` line, apply the abstain policy, then the justification.

    ``label_mapping`` maps the identifiers shown to the model to canonical stage numbers
    (case-sensitive). ``abstain_enabled=None`` skips the abstain policy.
    """
    if method not in ("single", "subset"):
        raise ValueError(f'Unknown scoring method "{method}". Allowed: single, subset')
    line, start = _last_verdict(text)
    if line.upper() == "ABSTAIN":
        parsed = VerdictParse(
            raw_verdict="ABSTAIN", decoded_scores=None, abstained=True, justification=""
        )
    elif method == "single":
        parsed = _decode_single(line, label_mapping)
    else:
        parsed = _decode_subset(line, label_mapping)

    if abstain_enabled is False and parsed.abstained:
        raise ParseError("Abstain not permitted by config", kind="abstain_not_permitted")

    justification = _js_trim(text[:start])
    if not justification:
        raise ParseError("Missing reasoning before VERDICT line", kind="missing_reasoning")
    return VerdictParse(
        raw_verdict=parsed.raw_verdict,
        decoded_scores=parsed.decoded_scores,
        abstained=parsed.abstained,
        justification=justification,
    )


# ---------------------------------------------------------------------------------------------
# score_critic
# ---------------------------------------------------------------------------------------------

_EXPERT_AGREEMENT = re.compile(rf"EXPERT_AGREEMENT:{_WS}*{_NUMBER}", _CI)


def parse_expert_agreement(text: str) -> ExpertAgreementParse:
    """Last ``EXPERT_AGREEMENT: <0-1>`` anywhere in the text, clamped to [0, 1]."""
    matches = list(_EXPERT_AGREEMENT.finditer(text))
    if not matches:
        raise ParseError(
            f"Failed to parse EXPERT_AGREEMENT line from probe response: {_preview(text)}",
            kind="missing_marker",
        )
    last = matches[-1]
    reasoning = _js_trim(text[: last.start()])
    if not reasoning:
        raise ParseError("Missing reasoning before EXPERT_AGREEMENT line", kind="missing_reasoning")
    return ExpertAgreementParse(
        expert_agreement_prob=_clamp01(float(last.group(1))), reasoning=reasoning
    )
