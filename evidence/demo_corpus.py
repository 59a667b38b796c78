"""A deterministic synthetic news corpus (no network, no data files).

Why generated rather than shipped: the demo and the search simulator need plausible, varied
political-news articles in several countries and windows, reproducible for a seed, without
bundling scraped copyrighted text. Articles mix neutral reporting with the kinds of cues the
rubrics look for (emergency powers, court changes, rallies, press pressure), at different
strengths, so judges produce a spread of verdicts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from judge_project.prng import mulberry32

_ACTORS = [
    "the prime minister", "the interior minister", "the ruling party", "opposition leaders",
    "the constitutional court", "a regional governor", "the national assembly", "the president",
    "security forces", "a coalition of civic groups",
]  # fmt: skip
_ACTIONS = [
    ("extended emergency powers for another ninety days", 4),
    ("announced a review of broadcasting licences held by critical outlets", 3),
    ("proposed lowering the mandatory retirement age for senior judges", 3),
    ("held a rally where speakers described critics as enemies of the nation", 3),
    ("passed a budget after a lengthy but orderly parliamentary debate", 1),
    ("opened consultations with unions on pension reform", 1),
    ("detained several protest organisers ahead of a planned march", 4),
    ("published the results of an independent audit of the election commission", 1),
    ("called for a referendum on expanding executive authority", 3),
    ("restricted foreign funding for non-governmental organisations", 3),
    ("lost a vote of confidence and accepted the result", 1),
    ("created a volunteer 'national guard' loyal to the ruling movement", 4),
]  # fmt: skip
_REACTIONS = [
    "Observers from the regional bar association called the move unprecedented.",
    "Analysts said the decision fits a longer pattern, though evidence remains mixed.",
    "Supporters argued the measures were temporary and subject to judicial review.",
    "A spokesperson declined to comment on the timing of the announcement.",
    "Opposition newspapers reported intimidation of local reporters the same week.",
    "Polling published on Monday showed the public split roughly evenly.",
    "International monitors said they would publish a fuller assessment next month.",
    "Protesters gathered peacefully outside the ministry; no arrests were reported.",
]  # fmt: skip
_BOILERPLATE = [
    "Subscribe to our newsletter for daily updates.",
    "Share this article: Facebook | X | Email",
    "Related stories: Markets close higher; Weather warning issued",
    "Accept cookies to continue reading.",
]  # fmt: skip
_OUTLETS = ["Daily Ledger", "Metro Herald", "Northern Courier", "Civic Times", "Evening Post"]


@dataclass(frozen=True, slots=True)
class Article:
    url: str
    title: str
    markdown: str
    published: str  # YYYY-MM-DD
    signal: int  # 1 (weak) .. 4 (strong): the cue strength the article was built with


def _seed_of(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def articles(*, query: str, country: str, start: str, end: str, limit: int) -> list[Article]:
    """``limit`` articles for a search; the same arguments always give the same articles."""
    rng = mulberry32(_seed_of(query, country, start, end))
    out: list[Article] = []
    for index in range(limit):
        actor = _ACTORS[int(rng() * len(_ACTORS))]
        action, signal = _ACTIONS[int(rng() * len(_ACTIONS))]
        outlet = _OUTLETS[int(rng() * len(_OUTLETS))]
        pool = list(_REACTIONS)
        reactions = [pool.pop(int(rng() * len(pool))) for _ in range(2 + int(rng() * 3))]
        day = 1 + int(rng() * 27)
        month = start[5:7] if len(start) >= 7 else "01"
        year = start[:4] if len(start) >= 4 else "2026"
        title = f"{country}: {actor[0].upper()}{actor[1:]} {action}"
        body = [
            f"# {title}",
            f"By staff reporter, {outlet}",
            "",
            f"{actor.capitalize()} {action}, officials in {country} confirmed on "
            f"{year}-{month}-{day:02d}.",
            "",
            *reactions,
            "",
            f"The {query} debate has intensified, with {int(rng() * 40) + 10} percent of "
            f"respondents in one survey saying institutions are under strain.",
            "",
            _BOILERPLATE[int(rng() * len(_BOILERPLATE))],
            _BOILERPLATE[int(rng() * len(_BOILERPLATE))],
        ]
        slug = hashlib.sha256(f"{query}|{country}|{start}|{index}".encode()).hexdigest()[:12]
        out.append(
            Article(
                url=f"https://news.example/{country.lower().replace(' ', '-')}/{slug}",
                title=title,
                markdown="\n".join(body),
                published=f"{year}-{month}-{day:02d}",
                signal=signal,
            )
        )
    return out
