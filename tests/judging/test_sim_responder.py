"""The simulator's responder: every reply satisfies its prompt's contract, for many seeds."""

from __future__ import annotations

import random
import re

import pytest

from evidence.prompts import check_transform_output, strip_summary_prefix, transform_prompt
from orchestration.judging.labels import build_label_mapping
from orchestration.judging.parsers import (
    ParseError,
    parse_expert_agreement,
    parse_quality,
    parse_rubric,
    parse_verdict,
)
from orchestration.judging.prompts import (
    EvidenceText,
    Randomization,
    render_rubric_surface,
    rubric_critic_prompt,
    rubric_gen_prompt,
    score_critic_prompt,
    score_gen_prompt,
)
from orchestration.judging.sim_responder import malformed, respond

SEEDS = [f"req-{i}" for i in range(200)]
CONCEPTS = ["fascism", "illiberal democracy", "state capture; (soft) [hard]", "backsliding: a, b"]
RANDOMIZATIONS: list[Randomization] = [
    "anonymize_stages",
    "hide_label_text",
    "shuffle_rubric_order",
]

SENTENCES = [
    "President Maria Lopez announced new emergency powers on Monday.",
    "Judge Alan Smith ruled that the decree exceeded its legal basis.",
    "The Electoral Commission postponed the regional vote by six months.",
    "Opposition leader Tomas Varga said 14 activists had been detained.",
    "Police dispersed a rally of roughly 2,000 people in the capital.",
    "The ministry denied that journalists were targeted.",
    "Lawmakers from the National Party backed the measure 61 to 40.",
]
BOILERPLATE = [
    "Subscribe to our newsletter",
    "![](https://img.example/photo.jpg)",
    "[Home](/) | [World](/world) | [Politics](/politics)",
    "Share this article on Facebook",
    "© 2025 Example News. All rights reserved.",
    "Related stories",
]


def _article(rng: random.Random, *, boilerplate: bool = True) -> str:
    lines = [f"# Headline {rng.randint(1, 999)}"]
    for _ in range(rng.randint(4, 12)):
        lines.append(" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 4))))
        if boilerplate and rng.random() < 0.4:
            lines.append(rng.choice(BOILERPLATE))
    return "\n\n".join(lines)


def _survey(rng: random.Random) -> str:
    rows = [
        f"| Q{i}: Do you trust body {i}? | {rng.randint(5, 80)}% | {rng.randint(5, 80)}% |"
        for i in range(rng.randint(70, 140))
    ]
    return (
        "Survey of 1,200 adults, fielded in May.\n\n| Question | Yes | No |\n|---|---|---|\n"
        + "\n".join(rows)
    )


def _rubric(seed: str, scale: int, concept: str = "fascism") -> list:  # type: ignore[type-arg]
    prompt = rubric_gen_prompt(concept=concept, scale_size=scale)
    return parse_rubric(
        respond(model="gpt-4.1", system=prompt.system, user=prompt.user, seed=seed),
        scale_size=scale,
    ).stages


@pytest.mark.parametrize("seed", SEEDS)
def test_rubric_gen(seed: str) -> None:
    rng = random.Random(seed)
    scale = rng.randint(2, 9)
    concept = rng.choice(CONCEPTS)
    prompt = rubric_gen_prompt(concept=concept, scale_size=scale)
    reply = respond(model="gpt-4.1", system=prompt.system, user=prompt.user, seed=seed)
    parsed = parse_rubric(reply, scale_size=scale)
    assert len(parsed.stages) == scale
    assert all(3 <= len(stage.criteria) <= 5 for stage in parsed.stages)
    if scale % 2:
        assert parsed.stages[(scale - 1) // 2].label == "Ambiguous / Mixed Evidence"
    assert reply == respond(model="gpt-4.1", system=prompt.system, user=prompt.user, seed=seed)


@pytest.mark.parametrize("seed", SEEDS[:50])
def test_rubric_critic(seed: str) -> None:
    prompt = rubric_critic_prompt(concept="fascism", stages=_rubric(seed, 4))
    parsed = parse_quality(respond(model="m", system=prompt.system, user=prompt.user, seed=seed))
    assert 0 <= parsed.observability_score <= 1
    assert 0 <= parsed.discriminability_score <= 1


def _score_setup(seed: str) -> tuple[dict[str, object], list[Randomization], dict[str, int]]:
    rng = random.Random(seed)
    scale = rng.randint(3, 9)
    randomizations = [r for r in RANDOMIZATIONS if rng.random() < 0.5]
    stages = _rubric(seed, scale)
    sample_seed = rng.randint(-(2**31), 2**31 - 1)
    mapping = build_label_mapping(
        scale, anonymize="anonymize_stages" in randomizations, seed=sample_seed
    )
    items = [EvidenceText(_article(rng)) for _ in range(rng.randint(1, 3))]
    kwargs: dict[str, object] = {
        "evidence_items": items,
        "stages": stages,
        "label_mapping": mapping,
        "randomizations": randomizations,
        "seed": sample_seed,
        "method": rng.choice(["single", "subset"]),
    }
    return kwargs, randomizations, mapping


@pytest.mark.parametrize("abstain", [True, False])
def test_score_gen(abstain: bool) -> None:
    abstentions = 0
    for seed in SEEDS:
        kwargs, randomizations, mapping = _score_setup(seed)
        prompt = score_gen_prompt(abstain_enabled=abstain, **kwargs)  # type: ignore[arg-type]
        reply = respond(model="m", system=prompt.system, user=prompt.user, seed=seed)
        parsed = parse_verdict(
            reply,
            method=kwargs["method"],  # type: ignore[arg-type]
            label_mapping=mapping,
            abstain_enabled=abstain,
        )
        assert reply == respond(model="m", system=prompt.system, user=prompt.user, seed=seed)
        if parsed.abstained:
            abstentions += 1
            continue
        surface = render_rubric_surface(
            stages=kwargs["stages"],  # type: ignore[arg-type]
            label_mapping=mapping,
            randomizations=randomizations,
            seed=kwargs["seed"],  # type: ignore[arg-type]
        )
        chosen = re.split(r",\s*", parsed.raw_verdict)
        assert set(chosen) <= set(surface.identifiers)
        assert len(chosen) == len(set(chosen))
        if kwargs["method"] == "single":
            assert len(chosen) == 1
        else:
            assert 1 <= len(chosen) <= 3
    if abstain:
        assert 5 <= abstentions <= 45  # about 10% of 200
    else:
        assert abstentions == 0


@pytest.mark.parametrize("seed", SEEDS[:50])
def test_score_critic(seed: str) -> None:
    kwargs, _, _ = _score_setup(seed)
    prompt = score_critic_prompt(decoded_scores=[1], **kwargs)  # type: ignore[arg-type]
    parsed = parse_expert_agreement(
        respond(model="m", system=prompt.system, user=prompt.user, seed=seed)
    )
    assert 0 <= parsed.expert_agreement_prob <= 1


@pytest.mark.parametrize("seed", SEEDS)
def test_window_chain(seed: str) -> None:
    rng = random.Random(seed)
    l0 = _survey(rng) if rng.random() < 0.25 else _article(rng)

    p1 = transform_prompt("l1_cleaned", l0)
    l1 = respond(model="m", system=p1.system, user=p1.user, seed=seed)
    assert check_transform_output("l1_cleaned", l0, l1) is None
    for line in BOILERPLATE:
        assert line not in l1
    assert "Headline" in l1 or "Survey" in l1

    p2 = transform_prompt("l2_neutralized", l1)
    l2 = respond(model="m", system=p2.system, user=p2.user, seed=seed)
    assert l2.startswith("Neutralized Summary:")
    assert check_transform_output("l2_neutralized", l1, l2) is None
    if 'mode="long_survey"' in p2.system:
        bullets = strip_summary_prefix("l2_neutralized", l2).splitlines()
        assert 8 <= len(bullets) <= 14
        assert all(b.startswith("- ") for b in bullets)

    p3 = transform_prompt("l3_abstracted", l2)
    l3 = respond(model="m", system=p3.system, user=p3.user, seed=seed)
    assert l3.startswith("Abstracted Summary:")
    assert check_transform_output("l3_abstracted", l2, l3) is None
    assert "Maria Lopez" not in l3
    assert "Alan Smith" not in l3

    assert l2 == respond(model="m", system=p2.system, user=p2.user, seed=seed)


def test_seeds_vary_outputs() -> None:
    prompt = rubric_critic_prompt(concept="fascism", stages=_rubric("x", 4))
    replies = {
        respond(model="m", system=prompt.system, user=prompt.user, seed=s) for s in SEEDS[:20]
    }
    assert len(replies) > 10


def test_unknown_prompt_gets_generic_reply() -> None:
    reply = respond(model="m", system=None, user="hello", seed="s")
    assert reply.startswith("Simulated reply")
    assert reply == respond(model="m", system=None, user="hello", seed="s")


@pytest.mark.parametrize("seed", SEEDS[:50])
def test_malformed_breaks_every_contract(seed: str) -> None:
    text = malformed(seed)
    assert text == malformed(seed)
    with pytest.raises(ParseError):
        parse_rubric(text, scale_size=4)
    with pytest.raises(ParseError):
        parse_quality(text)
    for method in ("single", "subset"):
        with pytest.raises(ParseError):
            parse_verdict(text, method=method, label_mapping={"A": 1, "B": 2}, abstain_enabled=True)  # type: ignore[arg-type]
        with pytest.raises(ParseError):
            parse_verdict(text, method=method, label_mapping=None, abstain_enabled=None)  # type: ignore[arg-type]
    with pytest.raises(ParseError):
        parse_expert_agreement(text)
    source = _article(random.Random(seed))
    for stage in ("l1_cleaned", "l2_neutralized", "l3_abstracted"):
        assert check_transform_output(stage, source, text) is not None  # type: ignore[arg-type]
