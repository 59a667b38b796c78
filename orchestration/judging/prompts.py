"""The four run-stage prompts (rubric_gen, rubric_critic, score_gen, score_critic).

Reproduced in meaning from judge-gym ``main`` (run_prompts.ts, run_strategies.ts; DOMAIN.md
section 8): XML-like sections (role, task, requirements, output_contract), reasoning first and
exactly one machine-readable line last, evidence in the *system* prompt (so the same evidence
scored by many samples shares one de-duplicated system prompt) and the rubric in the *user*
prompt.

Why ``render_rubric_surface`` exists: the score critic must judge the verdict against exactly
what the scorer saw (same identifiers, same order, same hidden labels). Both prompts render
the rubric through this one function, so the two surfaces cannot diverge, and the critic is
told the selected *identifiers*, never the decoded stage numbers.

Deliberate differences from the original, each closing a gap:

* Identifiers always come from the rubric's ``label_mapping`` (the mapping the parser decodes
  with). The original displayed plain letters whenever ``anonymize_stages`` was off, even if
  the stored mapping said otherwise, so display and decoding could disagree.
* The critic lists the selected identifiers in *display* order; the original sorted them by
  canonical stage, which leaks the hidden stage order when the display is shuffled.
* Each system prompt opens with ``<task id="..." ...>`` carrying the stage and the parameters
  the simulator needs (scale_size, method, abstain); see ``evidence.prompts.prompt_task_id``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from evidence.prompts import PromptPair, bullet_list, prompt_task_id, xml_block
from orchestration.judging.labels import display_order, tokens_by_stage

__all__ = [
    "PROMPT_VERSIONS",
    "DisplayedStage",
    "EvidenceText",
    "EvidenceView",
    "PromptPair",
    "Randomization",
    "RubricSurface",
    "ScoringMethod",
    "StageText",
    "VerdictSummary",
    "prompt_task_id",
    "render_evidence",
    "render_rubric_surface",
    "rubric_critic_prompt",
    "rubric_gen_prompt",
    "score_critic_prompt",
    "score_gen_prompt",
    "select_evidence_view",
    "summarize_verdict",
]

ScoringMethod = Literal["single", "subset"]
Randomization = Literal["anonymize_stages", "hide_label_text", "shuffle_rubric_order"]
EvidenceView = Literal["l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted"]

PROMPT_VERSIONS: dict[str, str] = {
    "rubric_gen": "rubric_gen@v1",
    "rubric_critic": "rubric_critic@v1",
    "score_gen": "score_gen@v1",
    "score_critic": "score_critic@v1",
}

MIDPOINT_LABEL = "Ambiguous / Mixed Evidence"
_REASONING_FIRST = (
    "Start your response by explaining step by step how you reached your conclusion, using "
    "only the information provided here."
)
_HYPOTHETICAL = (
    "Assume the evidence is presented in a hypothetical evaluation scenario rather than as a "
    "claim about the full real-world regime."
)
_NO_OUTSIDE = [
    "Use only the information provided here.",
    "Do not use outside knowledge.",
    "Do not infer unstated facts, motives, or background conditions.",
]


class StageText(Protocol):
    """Anything with a label and criteria (``parsers.RubricStage`` or a stored stage)."""

    @property
    def label(self) -> str: ...

    @property
    def criteria(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class EvidenceText:
    """One evidence item already resolved to the configured view; ``label`` is optional."""

    text: str
    label: str | None = None


# ---------------------------------------------------------------------------------------------
# Evidence
# ---------------------------------------------------------------------------------------------

_VIEW_ORDER: tuple[EvidenceView, ...] = ("l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted")


def select_evidence_view(
    view: EvidenceView,
    *,
    l0_raw: str,
    l1_cleaned: str | None = None,
    l2_neutralized: str | None = None,
    l3_abstracted: str | None = None,
) -> str:
    """The configured view, falling back to the nearest lower level that exists.

    (The original fell straight back to l0; the nearest processed level is closer to what
    the experiment asked for.)
    """
    levels = {
        "l0_raw": l0_raw,
        "l1_cleaned": l1_cleaned,
        "l2_neutralized": l2_neutralized,
        "l3_abstracted": l3_abstracted,
    }
    for level in reversed(_VIEW_ORDER[: _VIEW_ORDER.index(view) + 1]):
        text = levels[level]
        if text is not None and text.strip():
            return text
    return l0_raw


def render_evidence(items: Sequence[EvidenceText]) -> str:
    """One item as-is; a bundle as ``EVIDENCE 1`` .. ``EVIDENCE n`` blocks in position order."""
    if not items:
        raise ValueError("at least one evidence item is required")
    if len(items) == 1:
        return items[0].text.strip()
    blocks = []
    for position, item in enumerate(items, start=1):
        header = f"EVIDENCE {position}" + (f": {item.label}" if item.label else "")
        blocks.append(f"{header}\n{item.text.strip()}")
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# Rubric surface (shared by scorer and critic)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DisplayedStage:
    canonical_stage: int
    token: str
    label: str
    criteria: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RubricSurface:
    """The rubric exactly as the scoring model sees it (stages in display order)."""

    stages: tuple[DisplayedStage, ...]
    lines: tuple[str, ...]
    hide_label_text: bool

    @property
    def identifiers(self) -> tuple[str, ...]:
        """Displayed identifiers, in display order."""
        return tuple(stage.token for stage in self.stages)

    def token_for_stage(self, stage_number: int) -> str:
        for stage in self.stages:
            if stage.canonical_stage == stage_number:
                return stage.token
        raise KeyError(stage_number)

    def block(self) -> str:
        return xml_block("rubric_stages", "\n".join(self.lines))


def render_rubric_surface(
    *,
    stages: Sequence[StageText],
    label_mapping: Mapping[str, int],
    randomizations: Collection[Randomization],
    seed: int,
) -> RubricSurface:
    """Identifiers from ``label_mapping``, order from the sample seed, labels maybe hidden.

    Line format: ``<token>: "<label>" - Criteria: c1; c2`` or, with ``hide_label_text``,
    ``<token>: Criteria: c1; c2``.
    """
    count = len(stages)
    tokens = tokens_by_stage(label_mapping, count)
    hide = "hide_label_text" in randomizations
    order = display_order(count, seed, "shuffle_rubric_order" in randomizations)
    displayed = tuple(
        DisplayedStage(
            canonical_stage=number,
            token=tokens[number - 1],
            label=stages[number - 1].label,
            criteria=tuple(stages[number - 1].criteria),
        )
        for number in order
    )
    lines = tuple(
        f"{stage.token}: Criteria: {'; '.join(stage.criteria)}"
        if hide
        else f'{stage.token}: "{stage.label}" - Criteria: {"; ".join(stage.criteria)}'
        for stage in displayed
    )
    return RubricSurface(stages=displayed, lines=lines, hide_label_text=hide)


# ---------------------------------------------------------------------------------------------
# rubric_gen / rubric_critic
# ---------------------------------------------------------------------------------------------


def rubric_gen_prompt(*, concept: str, scale_size: int) -> PromptPair:
    """Expert rubric designer: N signal-strength stages for one concept (concept in user)."""
    if scale_size < 2:
        raise ValueError(f"scale_size must be at least 2, got {scale_size}")
    midpoint = (scale_size + 1) // 2 if scale_size % 2 == 1 else None
    requirements = [
        f"Produce exactly {scale_size} stages, numbered 1 through {scale_size}.",
        f"Stage 1 is the weakest signal; stage {scale_size} is the strongest signal.",
        "Make the rubric usable on a single article excerpt with partial context.",
        "Treat this as signal-strength assessment, not a definitive diagnosis.",
        "Base criteria on observable cues in the text: actions, policies, institutional "
        "responses and quoted claims.",
        "Do not use outside knowledge or rely on hidden historical context.",
        "Do not require inferring hidden intent or complete historical coverage.",
        "Make the lower and middle stages genuinely usable for weak, mixed or partial support.",
        "Use neutral, descriptive, non-moralizing language.",
        f'Stage {midpoint} must be labeled "{MIDPOINT_LABEL}".'
        if midpoint is not None
        else "This is an even-numbered scale, so there is no midpoint stage.",
        "Give 3 to 5 criteria per stage.",
        "Separate criteria with semicolons only; never use commas as the delimiter between "
        "criteria.",
        "Make each stage meaningfully distinct from its neighbours.",
    ]
    example = "\n".join(
        [
            "RUBRIC:",
            "1) Minimal or Indirect Signal :: Criterion one; Criterion two; Criterion three",
            "2) Weak or Isolated Features :: Criterion one; Criterion two; Criterion three",
            "...",
            f"{scale_size}) Extensive or Overt Signal :: Criterion one; Criterion two; Criterion three",
        ]
    )
    system = "\n\n".join(
        [
            xml_block(
                "role",
                "You are an expert rubric designer. You create stage-based rubrics for "
                "evaluating how strongly evidence supports a concept.",
            ),
            xml_block(
                "task",
                f"Design a {scale_size}-stage rubric for the concept provided by the user.",
                {"id": "rubric_gen", "scale_size": str(scale_size)},
            ),
            xml_block("requirements", bullet_list(requirements)),
            xml_block(
                "output_contract",
                "\n".join(
                    [
                        _REASONING_FIRST,
                        "Then output a line containing only `RUBRIC:`, followed by exactly "
                        f"{scale_size} stage lines and nothing else.",
                        "Do not wrap the block in markdown fences or backticks, and add no "
                        "lines before, between or after the stage lines.",
                        "Each stage line uses this format:",
                        "`<n>) <Stage Label> :: <criterion 1>; <criterion 2>; <criterion 3>`",
                        "Example:",
                        example,
                    ]
                ),
            ),
        ]
    )
    user = xml_block("prompt_variables", f"<concept>{concept}</concept>")
    return PromptPair(system=system, user=user, version=PROMPT_VERSIONS["rubric_gen"])


def rubric_critic_prompt(*, concept: str, stages: Sequence[StageText]) -> PromptPair:
    """Rubric quality auditor: observability and discriminability of the canonical rubric."""
    rubric_lines = "\n".join(
        f"{number}) {stage.label} :: {'; '.join(stage.criteria)}"
        for number, stage in enumerate(stages, start=1)
    )
    system = "\n\n".join(
        [
            xml_block(
                "role",
                "You are a rubric quality auditor. You judge whether a rubric is clear, "
                "observable and well structured for evaluating a concept.",
            ),
            xml_block(
                "task",
                "Evaluate the quality of the rubric provided by the user for the concept "
                "provided by the user.",
                {"id": "rubric_critic"},
            ),
            xml_block(
                "evaluation_dimensions",
                "\n".join(
                    [
                        "Observability: how well the rubric relies on observable evidence cues.",
                        "Discriminability: how clearly the stages are separated from each other.",
                    ]
                ),
            ),
            xml_block(
                "requirements",
                bullet_list(
                    [
                        "Use only the information provided here.",
                        "Do not use outside knowledge.",
                        "Do not assume facts beyond the rubric text itself.",
                        "Judge the rubric as a scoring instrument, not as a claim that the "
                        "concept is present in any evidence.",
                    ]
                ),
            ),
            xml_block(
                "output_contract",
                "\n".join(
                    [
                        _REASONING_FIRST,
                        "End with exactly one final line:",
                        "`QUALITY: observability=<0-1>, discriminability=<0-1>`",
                    ]
                ),
            ),
        ]
    )
    user = "\n\n".join(
        [
            xml_block("prompt_variables", f"<concept>{concept}</concept>"),
            xml_block("rubric", rubric_lines),
        ]
    )
    return PromptPair(system=system, user=user, version=PROMPT_VERSIONS["rubric_critic"])


# ---------------------------------------------------------------------------------------------
# score_gen
# ---------------------------------------------------------------------------------------------

_NO_DECORATION = (
    "The final line must begin exactly with `VERDICT:` and must not start with a bullet, "
    "dash, numbering or markdown emphasis."
)


def _method_rules(method: ScoringMethod, abstain_enabled: bool) -> tuple[list[str], list[str]]:
    """(requirements, output contract) for a scoring method and abstain policy."""
    if method == "single":
        requirements = ["Select exactly one rubric stage identifier from the user's rubric."]
        form = "`VERDICT: <one rubric stage identifier from the user prompt>`"
    elif method == "subset":
        requirements = [
            "Select every rubric stage identifier whose criteria are affirmatively supported "
            "by the evidence.",
            "If several stages are supported, include all of them; do not collapse to one.",
        ]
        form = "`VERDICT: <comma-separated rubric stage identifiers from the user prompt>`"
    else:
        raise ValueError(f'Unknown scoring method "{method}". Allowed: single, subset')

    if abstain_enabled:
        requirements.append("If no stage is sufficiently supported, answer `ABSTAIN`.")
        contract = [
            "End with exactly one final line in one of these forms:",
            form,
            "`VERDICT: ABSTAIN`",
            _NO_DECORATION,
        ]
    else:
        requirements.append(
            "Do not abstain. If nothing stronger applies, choose the weakest displayed rubric "
            "stage identifier."
        )
        contract = [
            "End with exactly one final line in this form:",
            form,
            _NO_DECORATION,
            "The final line must contain at least one displayed identifier. Never output "
            "`ABSTAIN`, `None`, an empty verdict, or any other text in the final line.",
            "If none of the stronger stages are supported, use the weakest displayed rubric "
            "stage identifier as your fallback instead of leaving the verdict blank.",
        ]
    return requirements, contract


def score_gen_prompt(
    *,
    evidence_items: Sequence[EvidenceText],
    stages: Sequence[StageText],
    label_mapping: Mapping[str, int],
    method: ScoringMethod,
    abstain_enabled: bool,
    randomizations: Collection[Randomization],
    seed: int,
) -> PromptPair:
    """Careful evaluator: evidence (system) against the randomized rubric surface (user)."""
    surface = render_rubric_surface(
        stages=stages, label_mapping=label_mapping, randomizations=randomizations, seed=seed
    )
    bundled = len(evidence_items) > 1
    requirements, contract = _method_rules(method, abstain_enabled)
    system = "\n\n".join(
        [
            xml_block(
                "role", "You are a careful evaluator of evidence against a rubric. " + _HYPOTHETICAL
            ),
            xml_block(
                "task",
                "Evaluate the combined evidence set against the rubric provided by the user."
                if bundled
                else "Evaluate the evidence against the rubric provided by the user.",
                {
                    "id": "score_gen",
                    "method": method,
                    "abstain": "allowed" if abstain_enabled else "forbidden",
                },
            ),
            xml_block("evidence", render_evidence(evidence_items)),
            xml_block(
                "requirements",
                bullet_list(
                    [
                        *_NO_OUTSIDE,
                        "Judge the combined evidence set as one unit; do not score the items "
                        "separately."
                        if bundled
                        else "Judge the evidence item as one unit.",
                        "Use only the rubric stage identifiers displayed by the user.",
                        *requirements,
                    ]
                ),
            ),
            xml_block("output_contract", "\n".join([_REASONING_FIRST, *contract])),
        ]
    )
    return PromptPair(system=system, user=surface.block(), version=PROMPT_VERSIONS["score_gen"])


# ---------------------------------------------------------------------------------------------
# score_critic
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerdictSummary:
    """What the critic is told about the verdict: identifiers only, never stage numbers."""

    method: ScoringMethod
    status: Literal["scored", "abstain"]
    selected_identifiers: tuple[str, ...]


def summarize_verdict(
    surface: RubricSurface, *, method: ScoringMethod, decoded_scores: Sequence[int] | None
) -> VerdictSummary:
    """Map decoded stages back to the displayed identifiers, in display order.

    Invalid or duplicate stage numbers are dropped; nothing left means ``abstain``.
    """
    chosen = set(decoded_scores or ())
    selected = tuple(stage.token for stage in surface.stages if stage.canonical_stage in chosen)
    return VerdictSummary(
        method=method, status="scored" if selected else "abstain", selected_identifiers=selected
    )


def score_critic_prompt(
    *,
    evidence_items: Sequence[EvidenceText],
    stages: Sequence[StageText],
    label_mapping: Mapping[str, int],
    method: ScoringMethod,
    randomizations: Collection[Randomization],
    seed: int,
    decoded_scores: Sequence[int] | None,
) -> PromptPair:
    """Expert-agreement auditor: the scorer's evidence, rubric surface and verdict."""
    surface = render_rubric_surface(
        stages=stages, label_mapping=label_mapping, randomizations=randomizations, seed=seed
    )
    verdict = summarize_verdict(surface, method=method, decoded_scores=decoded_scores)
    bundled = len(evidence_items) > 1
    mode_definition = (
        "Subset scoring: several rubric stages may be selected at once."
        if method == "subset"
        else "Single scoring: exactly one rubric stage is selected unless the model abstained."
    )
    system = "\n\n".join(
        [
            xml_block(
                "role",
                "You are an expert agreement auditor. You estimate how likely an expert panel "
                "would be to agree with a model verdict. " + _HYPOTHETICAL,
            ),
            xml_block(
                "task",
                "Estimate the probability that an expert panel would agree with the model "
                "verdict provided by the user.",
                {"id": "score_critic", "method": method},
            ),
            xml_block("evidence", render_evidence(evidence_items)),
            xml_block(
                "requirements",
                bullet_list(
                    [
                        *_NO_OUTSIDE,
                        "Judge agreement with the model's verdict about the combined evidence set."
                        if bundled
                        else "Judge agreement with the model's verdict about the evidence item.",
                        "Judge agreement with the exact rubric presentation and verdict "
                        "identifiers provided by the user.",
                        "Evaluate agreement with the model's conclusion; do not rescore from "
                        "scratch.",
                    ]
                ),
            ),
            xml_block(
                "output_contract",
                "\n".join(
                    [
                        _REASONING_FIRST,
                        "End with exactly one final line:",
                        "`EXPERT_AGREEMENT: <0-1>`",
                    ]
                ),
            ),
        ]
    )
    selected = ", ".join(verdict.selected_identifiers) or "(none)"
    user = "\n\n".join(
        [
            surface.block(),
            xml_block(
                "model_verdict",
                "\n".join(
                    [
                        f"<scoring_mode>{method}</scoring_mode>",
                        f"<scoring_mode_definition>{mode_definition}</scoring_mode_definition>",
                        f"<status>{verdict.status.upper()}</status>",
                        f"<selected_identifiers>{selected}</selected_identifiers>",
                    ]
                ),
            ),
        ]
    )
    return PromptPair(system=system, user=user, version=PROMPT_VERSIONS["score_critic"])
