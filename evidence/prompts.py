"""Window transform prompts (l0 -> l1 clean -> l2 neutralize -> l3 abstract) and their checks.

Why these live here: the evidence pipeline owns its views, and the judging code depends on
evidence (never the reverse), so the tiny shared prompt types (``PromptPair``, the XML section
helper and the task marker) are defined in this module and imported by
``orchestration.judging.prompts``.

Reproduced in meaning from judge-gym's evidence prompts (DOMAIN.md section 8), with three
deliberate improvements taken from its "where the original is weak" list:

1. Stage input is truncated to ``MAX_STAGE_INPUT_CHARS`` (20,000), as on temporal-migration.
2. The L2 "long survey" mode is decided here, in code, and the prompt tells the model which
   mode applies. The original let the model decide, which made its own length targets
   uncheckable. Long = at least 450 words or 3000 characters; survey/table-heavy = the
   heuristics in ``_is_survey_heavy``. Both must hold (as in the original prompt), because
   most news articles are long and must not be reduced to bullets.
3. Outputs are validated: ``strip_summary_prefix`` removes the requested "Neutralized
   Summary:" / "Abstracted Summary:" prefixes, and ``check_length_invariant`` /
   ``check_transform_output`` report violations of the length targets the prompts state
   (L2 80-95% of L1, long-survey 45-70%; L3 at most 90% of L2; L1 never longer than L0).

Every system prompt carries a machine-readable ``<task id="...">`` marker as its first task
element (see ``prompt_task_id``); the provider simulator uses it to recognise the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

TransformStage = Literal["l1_cleaned", "l2_neutralized", "l3_abstracted"]
L2Mode = Literal["default", "long_survey"]

MAX_STAGE_INPUT_CHARS = 20_000

TASK_IDS: dict[TransformStage, str] = {
    "l1_cleaned": "l1_clean",
    "l2_neutralized": "l2_neutralize",
    "l3_abstracted": "l3_abstract",
}
PROMPT_VERSIONS: dict[str, str] = {
    "l1_clean": "l1_clean@v1",
    "l2_neutralize": "l2_neutralize@v1",
    "l3_abstract": "l3_abstract@v1",
}
SUMMARY_PREFIXES: dict[TransformStage, str] = {
    "l2_neutralized": "Neutralized Summary:",
    "l3_abstracted": "Abstracted Summary:",
}

# Length bounds (output / source, in characters after prefix stripping), as stated to the model.
L1_MAX_RATIO = 1.0
L2_DEFAULT_RATIO = (0.80, 0.95)
L2_LONG_SURVEY_RATIO = (0.45, 0.70)
L3_MAX_RATIO = 0.90

LONG_INPUT_WORDS = 450
LONG_INPUT_CHARS = 3000
LONG_SURVEY_BULLETS = (8, 14)
LONG_SURVEY_BULLET_MAX_WORDS = 24

ROLE_TOKENS = (
    "EXECUTIVE_LEADER",
    "STATE_OFFICIAL",
    "JUDGE",
    "COUNTRY_A",
    "REGION_A",
    "PARTY_A",
    "PARTY_B",
    "NEWS_OUTLET_A",
)


@dataclass(frozen=True, slots=True)
class PromptPair:
    """A system + user prompt and the prompt version that produced them (stored per request)."""

    system: str
    user: str
    version: str


# ---------------------------------------------------------------------------------------------
# Shared prompt plumbing (also used by orchestration.judging.prompts)
# ---------------------------------------------------------------------------------------------

TASK_MARKER = re.compile(r'<task id="([a-z0-9_]+)"((?: [a-z_]+="[^"]*")*)>')
_TASK_ATTR = re.compile(r' ([a-z_]+)="([^"]*)"')


def xml_block(tag: str, body: str, attrs: Mapping[str, str] | None = None) -> str:
    """``<tag a="b">\\nbody\\n</tag>``: the XML-like sections every prompt is built from."""
    rendered = "".join(f' {key}="{value}"' for key, value in (attrs or {}).items())
    return f"<{tag}{rendered}>\n{body}\n</{tag}>"


def bullet_list(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def prompt_task_id(system: str | None, user: str) -> tuple[str, dict[str, str]] | None:
    """The task id and attributes of a prompt built by this project, or None.

    The marker is searched in the system prompt first, where our builders put it before any
    untrusted text (evidence, articles), so the first match is always ours.
    """
    for text in (system or "", user):
        match = TASK_MARKER.search(text)
        if match is not None:
            return match.group(1), dict(_TASK_ATTR.findall(match.group(2)))
    return None


# ---------------------------------------------------------------------------------------------
# Input preparation and mode detection
# ---------------------------------------------------------------------------------------------

_PREFIX_PATTERNS: dict[TransformStage, re.Pattern[str]] = {
    stage: re.compile(
        r"\A\s*(?:\*\*|__)?" + re.escape(prefix[:-1]) + r"\s*:(?:\*\*|__)?\s*", re.IGNORECASE
    )
    for stage, prefix in SUMMARY_PREFIXES.items()
}
_TABLE_ROW = re.compile(r"^.*\|.*\|.*$", re.MULTILINE)
_TAB_ROW = re.compile(r"^.*\t.*\t.*$", re.MULTILINE)
_PERCENT = re.compile(r"\d+(?:[.,]\d+)?\s?%")
_QUESTION_LINE = re.compile(r"\?\s*$", re.MULTILINE)


def truncate_stage_input(text: str) -> str:
    """Cap what a transform sees, so one huge scrape cannot blow the token budget."""
    return text[:MAX_STAGE_INPUT_CHARS]


def _stage_input(stage: TransformStage, text: str) -> str:
    # L3 reads L2; drop L2's requested prefix if the stored L2 still carries it.
    if stage == "l3_abstracted":
        text = strip_summary_prefix("l2_neutralized", text)
    return truncate_stage_input(text).strip()


def is_long_input(text: str) -> bool:
    return len(text.split()) >= LONG_INPUT_WORDS or len(text) >= LONG_INPUT_CHARS


def _is_survey_heavy(text: str) -> bool:
    """Table- or survey-shaped input: pipe/TSV rows, dense percentages, question blocks."""
    percents = len(_PERCENT.findall(text))
    return (
        len(_TABLE_ROW.findall(text)) >= 3
        or len(_TAB_ROW.findall(text)) >= 3
        or percents >= 10
        or (len(_QUESTION_LINE.findall(text)) >= 4 and percents >= 4)
    )


def l2_mode(l1_text: str) -> L2Mode:
    """Which L2 mode applies to this (already truncated) L1 text."""
    text = truncate_stage_input(l1_text).strip()
    return "long_survey" if is_long_input(text) and _is_survey_heavy(text) else "default"


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------

_OUTPUT_ONLY = "Return only the requested text: no preamble, commentary, JSON, or code fences."

_L1_SYSTEM = "\n\n".join(
    [
        xml_block(
            "role",
            "You are L1, a fidelity cleaner for scraped news and article markdown.",
        ),
        xml_block(
            "task",
            "Remove page chrome and boilerplate while keeping the article exactly as written. "
            "The set of factual claims must not change.",
            {"id": TASK_IDS["l1_cleaned"]},
        ),
        xml_block(
            "requirements",
            bullet_list(
                [
                    "Remove only content that is clearly not the article: navigation and menus, "
                    "cookie and subscribe prompts, share widgets, footers and legal text, "
                    '"related stories" sections, repeated interface labels and link dumps.',
                    "Remove image-only lines (such as ![](url)) unless the caption carries "
                    "article content.",
                    "Keep the headline, byline and date, section headers and the body.",
                    "Keep quotes, names, numbers, dates and attributions exactly as written.",
                    "Keep tables and lists that carry article content.",
                    "Do not summarize, paraphrase, reorder, infer or editorialize.",
                    "If you are unsure whether a line belongs to the article, keep it.",
                ]
            ),
        ),
        xml_block(
            "output_contract",
            "Return only the cleaned markdown body. " + _OUTPUT_ONLY,
        ),
    ]
)


def _l2_system(mode: L2Mode) -> str:
    if mode == "long_survey":
        lo, hi = L2_LONG_SURVEY_RATIO
        bullets_lo, bullets_hi = LONG_SURVEY_BULLETS
        mode_rules = [
            "This input is a long survey or table-heavy text (long-survey mode).",
            f"Target length: {lo:.0%}-{hi:.0%} of the input length; never more than {hi:.0%}.",
            f"Write {bullets_lo}-{bullets_hi} concise bullets (no tables), each at most "
            f"{LONG_SURVEY_BULLET_MAX_WORDS} words.",
            "Cover, in this order: survey scope, sample and timeframe; top-line outcomes; the "
            "largest directional findings; material subgroup differences; methodology caveats "
            "and error bounds.",
            "Deduplicate repeated framing and row labels, but keep every distinct finding, "
            "datapoint and caveat.",
        ]
    else:
        lo, hi = L2_DEFAULT_RATIO
        mode_rules = [
            f"Target length: {lo:.0%}-{hi:.0%} of the input length; never longer than the input.",
            "Keep the order and sentence flow close to the input.",
            "Remove only repetition, rhetorical padding and stylistic noise.",
        ]
    return "\n\n".join(
        [
            xml_block("role", "You are L2, a fidelity-first normalizer of news text."),
            xml_block(
                "task",
                "Reduce rhetoric and style while preserving all material content. The claim "
                "graph of the input (who claimed what, causes, order, uncertainty, quantities) "
                "must stay intact.",
                {"id": TASK_IDS["l2_neutralized"], "mode": mode},
            ),
            xml_block(
                "requirements",
                bullet_list(
                    [
                        *mode_rules,
                        "Preserve entities, counts, percentages, dates, comparisons, causality, "
                        "caveats, uncertainty and source attribution.",
                        "Do not add facts, infer missing context, or strengthen causal claims.",
                        "Drop decorative markdown and table scaffolding unless it carries facts.",
                    ]
                ),
            ),
            xml_block(
                "output_contract",
                'Start your reply with "Neutralized Summary:" followed by the normalized text. '
                + _OUTPUT_ONLY,
            ),
        ]
    )


_L3_SYSTEM = "\n\n".join(
    [
        xml_block("role", "You are L3, a strict structural abstractor."),
        xml_block(
            "task",
            "Reduce identity priors while preserving governance structure and the meaning of "
            "the input. Attribution, causality, temporal order, uncertainty and quantities must "
            "stay intact.",
            {"id": TASK_IDS["l3_abstracted"]},
        ),
        xml_block(
            "requirements",
            bullet_list(
                [
                    f"Do not expand: the output must be at most {L3_MAX_RATIO:.0%} of the input "
                    "length.",
                    "Abstract by direct substitution only: people become role tokens (such as "
                    "EXECUTIVE_LEADER, STATE_OFFICIAL, JUDGE); countries and regions become "
                    "COUNTRY_A, REGION_A; parties become PARTY_A, PARTY_B; media outlets become "
                    "NEWS_OUTLET_A.",
                    "Use the same token for the same entity everywhere in the text.",
                    "Keep institutional and governance roles and actions explicit (executive, "
                    "judiciary, legislature, election authority, police, military).",
                    "Keep all quantities, qualifiers, modality and temporal anchors.",
                    "Keep a specific term when abstracting it would lose the meaning of the claim.",
                    "Keep the order of information; keep bullets if the input is bulleted, with "
                    "no more bullets than the input.",
                    "Do not add examples, interpretation, context or inferred claims.",
                ]
            ),
        ),
        xml_block(
            "output_contract",
            'Start your reply with "Abstracted Summary:" followed by the abstracted text. '
            + _OUTPUT_ONLY,
        ),
    ]
)


def transform_prompt(stage: TransformStage, text: str) -> PromptPair:
    """The prompt for one window transform; ``text`` is the previous level's content.

    System prompts are constant per stage (and per L2 mode), so they de-duplicate; the
    input and its length budget go in the user prompt.
    """
    source = _stage_input(stage, text)
    length = len(source)
    task_id = TASK_IDS[stage]
    if stage == "l1_cleaned":
        system = _L1_SYSTEM
        instruction = "Clean the following scraped article markdown."
        closing = ""
    elif stage == "l2_neutralized":
        mode = l2_mode(source)
        system = _l2_system(mode)
        lo, hi = L2_LONG_SURVEY_RATIO if mode == "long_survey" else L2_DEFAULT_RATIO
        instruction = (
            "Normalize the following text while preserving factual fidelity.\n"
            f"Input length: {length} characters. Target output length: "
            f"{int(length * lo)}-{int(length * hi)} characters."
        )
        closing = '\n\nStart your reply with "Neutralized Summary:".'
    else:
        system = _L3_SYSTEM
        instruction = (
            "Abstract the following text with strict non-expansion and structural fidelity.\n"
            f"Input length: {length} characters. Maximum output length: "
            f"{int(length * L3_MAX_RATIO)} characters."
        )
        closing = (
            '\n\nStart your reply with "Abstracted Summary:". '
            "If the input is bulleted, keep the output bulleted."
        )
    user = f"{instruction}\n\n{xml_block('input_text', source)}{closing}"
    return PromptPair(system=system, user=user, version=PROMPT_VERSIONS[task_id])


# ---------------------------------------------------------------------------------------------
# Output handling
# ---------------------------------------------------------------------------------------------


def has_summary_prefix(stage: TransformStage, output: str) -> bool:
    pattern = _PREFIX_PATTERNS.get(stage)
    return pattern is None or pattern.match(output) is not None


def strip_summary_prefix(stage: TransformStage, output: str) -> str:
    """Drop the stage's requested prefix (tolerating bold and case) and surrounding space."""
    pattern = _PREFIX_PATTERNS.get(stage)
    if pattern is not None:
        output = pattern.sub("", output, count=1)
    return output.strip()


def _bounds(stage: TransformStage, source: str) -> tuple[float | None, float, str]:
    if stage == "l1_cleaned":
        return None, L1_MAX_RATIO, "at most 100%"
    if stage == "l3_abstracted":
        return None, L3_MAX_RATIO, f"at most {L3_MAX_RATIO:.0%}"
    if l2_mode(source) == "long_survey":
        lo, hi = L2_LONG_SURVEY_RATIO
        return lo, hi, f"{lo:.0%}-{hi:.0%} (long-survey mode)"
    lo, hi = L2_DEFAULT_RATIO
    return lo, hi, f"{lo:.0%}-{hi:.0%}"


def check_length_invariant(stage: TransformStage, source_text: str, output_text: str) -> str | None:
    """A violation reason, or None when the output length fits the stage's stated target.

    Lengths are characters after prefix stripping and trimming; the source is measured as
    the model saw it (truncated to ``MAX_STAGE_INPUT_CHARS``).
    """
    source = _stage_input(stage, source_text)
    output = strip_summary_prefix(stage, output_text)
    if not source:
        return f"{stage}: source text is empty"
    if not output:
        return f"{stage}: output is empty"
    ratio = len(output) / len(source)
    lo, hi, wanted = _bounds(stage, source)
    if ratio > hi or (lo is not None and ratio < lo):
        return (
            f"{stage}: output is {ratio:.1%} of the source length "
            f"({len(output)}/{len(source)} chars), expected {wanted}"
        )
    return None


_WRAPPER_START = re.compile(r"\A\s*(?:```|\{\s*\"|\[\s*[\"{])")


def check_transform_output(stage: TransformStage, source_text: str, output_text: str) -> str | None:
    """All checks for a transform output: non-empty, prefix, no wrapper, length.

    L2/L3 must carry their requested prefix; L1 must not be wrapped in a code fence or JSON
    (unless the source itself starts that way). Returns the first violation or None.
    """
    if not output_text.strip():
        return f"{stage}: output is empty"
    if not has_summary_prefix(stage, output_text):
        return f'{stage}: output does not start with "{SUMMARY_PREFIXES[stage]}"'
    if (
        stage == "l1_cleaned"
        and _WRAPPER_START.match(output_text)
        and not _WRAPPER_START.match(source_text)
    ):
        return f"{stage}: output is wrapped (code fence or JSON) instead of a markdown body"
    return check_length_invariant(stage, source_text, output_text)
