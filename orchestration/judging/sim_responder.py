"""Deterministic model stand-in for the provider simulator.

Why: demos, chaos tests and benchmarks must drive the whole pipeline offline, so the
simulator needs replies that satisfy each prompt's output contract (and, through
``malformed``, replies that satisfy none). ``respond`` recognises the prompt from the
``<task id="...">`` marker every builder in this project emits (``evidence.prompts.
prompt_task_id``), reads the parameters it needs from the marker attributes and the prompt
body, and derives all randomness from ``seed`` (SHA-256 -> 32-bit -> mulberry32), so the same
seed always gives the same reply.

Contracts produced (checked by tests/judging/test_sim_responder.py for many seeds):

* rubric_gen: reasoning, ``RUBRIC:``, exactly ``scale_size`` stages with 3-5 criteria each
  (odd scales label the midpoint "Ambiguous / Mixed Evidence").
* rubric_critic: reasoning + ``QUALITY: observability=0.xx, discriminability=0.yy``.
* score_gen: reasoning + ``VERDICT:`` using only identifiers displayed in the user prompt
  (single: one; subset: one to three); ``ABSTAIN`` about 10% of the time, only when allowed.
* score_critic: reasoning + ``EXPERT_AGREEMENT: 0.xx``.
* l1/l2/l3: L1 drops obvious boilerplate lines; L2 keeps 85-90% of the input (long-survey
  mode: 55-65% as 8-14 bullets) after "Neutralized Summary:"; L3 substitutes role tokens for
  capitalised names and keeps about 80% of L2 after "Abstracted Summary:".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from evidence.prompts import (
    L2_DEFAULT_RATIO,
    L2_LONG_SURVEY_RATIO,
    L3_MAX_RATIO,
    LONG_SURVEY_BULLETS,
    ROLE_TOKENS,
    prompt_task_id,
)
from judge_project.prng import mulberry32
from orchestration.judging.prompts import MIDPOINT_LABEL

Rng = Callable[[], float]

_CONCEPT = re.compile(r"<concept>(.*?)</concept>", re.DOTALL)
_RUBRIC_STAGES = re.compile(r"<rubric_stages>\n(.*)\n</rubric_stages>", re.DOTALL)
_INPUT_TEXT = re.compile(r"<input_text>\n(.*)\n</input_text>", re.DOTALL)
_UNSAFE_CRITERION_CHARS = re.compile(r"[;:,()\[\]\s]+")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)+\b")
_BOILERPLATE = re.compile(
    r"subscribe|sign up|newsletter|cookie|advertisement|share (?:this|on)|follow us|"
    r"related (?:stories|articles)|read more|you may (?:also )?like|more from|"
    r"all rights reserved|©|privacy policy|terms of (?:use|service)",
    re.IGNORECASE,
)
_IMAGE_ONLY = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK_ONLY = re.compile(r"(?:\s*[-*|]?\s*\[[^\]]*\]\([^)]*\))+\s*")

_STAGE_LABELS = [
    "Minimal or Indirect Signal",
    "Weak or Isolated Features",
    "Emerging Pattern",
    "Clear but Limited Pattern",
    "Substantial Pattern",
    "Strong and Repeated Pattern",
    "Pervasive Pattern",
    "Dominant Pattern",
    "Extensive or Overt Signal",
]
_CUES = [
    "the text reports concrete actions by officials",
    "quoted statements describe the intent of an action",
    "institutional responses are described explicitly",
    "policies are named together with their effects",
    "opposition or press activity is shown as restricted",
    "the scope of the measures is stated",
    "several independent incidents are described",
    "the excerpt links the actions to a stated ideology",
    "enforcement is described as systematic rather than isolated",
    "the text gives dates or quantities for the measures",
]
_REASONING = [
    "I compared the cues in the text with each stage in turn.",
    "The evidence describes some observable actions but leaves context out.",
    "I looked only at what the excerpt states, not at outside knowledge.",
    "The stronger stages require repeated, explicit patterns.",
    "Several criteria are partly met, which matters for the weaker stages.",
]


def _rng(seed: str, salt: str) -> Rng:
    digest = hashlib.sha256(f"{salt}\x00{seed}".encode()).digest()
    return mulberry32(int.from_bytes(digest[:4], "big"))


def _pick(rng: Rng, items: Sequence[str]) -> str:
    return items[int(rng() * len(items))]


def _sample(rng: Rng, items: Sequence[str], count: int) -> list[str]:
    pool = list(items)
    chosen = []
    for _ in range(min(count, len(pool))):
        chosen.append(pool.pop(int(rng() * len(pool))))
    return chosen


def _reasoning(rng: Rng) -> str:
    steps = _sample(rng, _REASONING, 2 + int(rng() * 2))
    return "\n".join(f"Step {index}: {step}" for index, step in enumerate(steps, start=1))


def _probability(rng: Rng, low: float, high: float) -> str:
    return f"{low + rng() * (high - low):.2f}"


# ---------------------------------------------------------------------------------------------
# Run stages
# ---------------------------------------------------------------------------------------------


def _rubric_gen(rng: Rng, attrs: dict[str, str], user: str) -> str:
    scale = int(attrs.get("scale_size", "4"))
    concept_match = _CONCEPT.search(user)
    concept = concept_match.group(1) if concept_match else "the concept"
    concept = _UNSAFE_CRITERION_CHARS.sub(" ", concept).strip() or "the concept"
    midpoint = (scale + 1) // 2 if scale % 2 == 1 else None
    lines = ["RUBRIC:"]
    for number in range(1, scale + 1):
        if number == midpoint:
            label = MIDPOINT_LABEL
        elif scale <= len(_STAGE_LABELS):
            # Spread the label list over the scale so 1 is weakest and N strongest.
            label = _STAGE_LABELS[round((number - 1) * (len(_STAGE_LABELS) - 1) / (scale - 1))]
        else:
            label = f"Signal Level {number}"
        cues = _sample(rng, _CUES, 3 + int(rng() * 3))
        criteria = [f"{cue} regarding {concept}" for cue in cues]
        lines.append(f"{number}) {label} :: {'; '.join(criteria)}")
    reasoning = (
        f"I designed {scale} stages for {concept} from observable cues only.\n{_reasoning(rng)}"
    )
    return reasoning + "\n" + "\n".join(lines)


def _rubric_critic(rng: Rng) -> str:
    return (
        f"{_reasoning(rng)}\n"
        f"QUALITY: observability={_probability(rng, 0.4, 0.95)}, "
        f"discriminability={_probability(rng, 0.4, 0.95)}"
    )


def _displayed_identifiers(user: str) -> list[str]:
    block = _RUBRIC_STAGES.search(user)
    if block is None:
        return []
    return [line.split(":", 1)[0].strip() for line in block.group(1).splitlines() if ":" in line]


def _score_gen(rng: Rng, attrs: dict[str, str], user: str) -> str:
    identifiers = _displayed_identifiers(user)
    reasoning = _reasoning(rng)
    abstain_roll = rng()
    if not identifiers or (attrs.get("abstain") == "allowed" and abstain_roll < 0.1):
        return f"{reasoning}\nVERDICT: ABSTAIN"
    if attrs.get("method") == "subset":
        chosen = _sample(rng, identifiers, 1 + int(rng() * 3))
        return f"{reasoning}\nVERDICT: {', '.join(chosen)}"
    return f"{reasoning}\nVERDICT: {_pick(rng, identifiers)}"


def _score_critic(rng: Rng) -> str:
    return f"{_reasoning(rng)}\nEXPERT_AGREEMENT: {_probability(rng, 0.3, 0.95)}"


# ---------------------------------------------------------------------------------------------
# Window transforms
# ---------------------------------------------------------------------------------------------


def _input_text(user: str) -> str:
    match = _INPUT_TEXT.search(user)
    return (match.group(1) if match else user).strip()


def _is_boilerplate(line: str) -> bool:
    stripped = line.strip()
    if not stripped:
        return False
    return bool(
        _BOILERPLATE.search(stripped)
        or _IMAGE_ONLY.fullmatch(stripped)
        or _LINK_ONLY.fullmatch(stripped)
    )


def _l1(text: str) -> str:
    kept = [line for line in text.splitlines() if not _is_boilerplate(line)]
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return cleaned or text


def _cut(text: str, target: int, floor: int) -> str:
    """``text`` cut to about ``target`` characters, at a word boundary if that stays >= floor."""
    head = text[:target]
    space = head.rfind(" ")
    if space >= floor:
        head = head[:space]
    head = head.strip()
    return head if len(head) >= floor else text[:target].strip()


def _l2(rng: Rng, attrs: dict[str, str], text: str) -> str:
    length = len(text)
    if attrs.get("mode") == "long_survey":
        ratio = 0.55 + rng() * 0.10
        words = text.split()
        bullets = LONG_SURVEY_BULLETS[0] + int(
            rng() * (LONG_SURVEY_BULLETS[1] - LONG_SURVEY_BULLETS[0] + 1)
        )
        budget = ratio * length - 3 * bullets  # "- " and the newline per bullet
        taken: list[str] = []
        used = 0
        for word in words:
            if used + len(word) + 1 > budget:
                break
            taken.append(word)
            used += len(word) + 1
        bullets = max(1, min(bullets, len(taken)))
        size = -(-len(taken) // bullets) if taken else 1
        chunks = [taken[i : i + size] for i in range(0, len(taken), size)] or [[text[:1]]]
        body = "\n".join("- " + " ".join(chunk) for chunk in chunks)
        floor = int(L2_LONG_SURVEY_RATIO[0] * length) + 1
        if len(body) < floor:  # extremely long words; fall back to a plain cut
            body = _cut(text, round(ratio * length), floor)
    else:
        ratio = 0.85 + rng() * 0.05
        body = _cut(text, round(ratio * length), int(L2_DEFAULT_RATIO[0] * length) + 1)
    return f"Neutralized Summary:\n{body}"


def _l3(rng: Rng, text: str) -> str:
    tokens: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(0)
        if name not in tokens:
            tokens[name] = ROLE_TOKENS[len(tokens) % len(ROLE_TOKENS)]
        return tokens[name]

    abstracted = _NAME.sub(substitute, text)
    length = len(text)
    ratio = 0.78 + rng() * 0.04
    ceiling = int(L3_MAX_RATIO * length)
    body = _cut(abstracted, min(round(ratio * length), ceiling), 1)
    return f"Abstracted Summary:\n{body}"


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def respond(*, model: str, system: str | None, user: str, seed: str) -> str:
    """A valid reply for the recognised prompt, deterministic in (prompt, seed).

    ``model`` is accepted for interface symmetry with real providers; replies do not depend
    on it, so a run's outcome is the same whichever model the config names.
    """
    recognised = prompt_task_id(system, user)
    task_id, attrs = recognised if recognised is not None else ("unknown", {})
    rng = _rng(seed, task_id)
    if task_id == "rubric_gen":
        return _rubric_gen(rng, attrs, user)
    if task_id == "rubric_critic":
        return _rubric_critic(rng)
    if task_id == "score_gen":
        return _score_gen(rng, attrs, user)
    if task_id == "score_critic":
        return _score_critic(rng)
    if task_id == "l1_clean":
        return _l1(_input_text(user))
    if task_id == "l2_neutralize":
        return _l2(rng, attrs, _input_text(user))
    if task_id == "l3_abstract":
        return _l3(rng, _input_text(user))
    return f"Simulated reply {int(rng() * 1_000_000):06d}."


def malformed(seed: str) -> str:
    """A reply that breaks every contract: no RUBRIC/QUALITY/VERDICT/EXPERT_AGREEMENT marker
    (only near misses), no summary prefix, and a JSON wrapper that L1 rejects."""
    rng = _rng(seed, "malformed")
    ref = f"{int(rng() * 0xFFFFFFFF):08x}"
    return (
        '{"status": "incomplete", '
        '"note": "Verdict - maybe B? Quality looks high; expert agreement about 85%; '
        'rubric omitted", '
        f'"ref": "{ref}"}}'
    )
