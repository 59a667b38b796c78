"""The search-adapter interface: what the collect step needs from a news search provider.

Why an interface: collection must run against Firecrawl in production and against the
simulator in tests and demos *through the same code path* (the simulator speaks Firecrawl's
HTTP API, so the real adapter is what the tests exercise), and a second provider must be a new
adapter, not a change to the pipeline.

Errors are classified once, here (``SearchError.kind``), so the collect step can decide what to
retry without knowing which SDK raised what.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

SearchErrorKind = Literal[
    "timeout",  # no answer within the per-request timeout
    "connection",  # could not connect / connection dropped
    "rate_limit",  # 429
    "server",  # 5xx
    "auth",  # 401/403: bad or missing API key
    "quota",  # 402: out of credits
    "bad_request",  # 400 or a request the SDK refused to send
    "invalid_response",  # an answer we cannot read
    "sandbox",  # refused by our own sandbox (e.g. an API host that may not get the key)
]

#: Kinds worth a second attempt: the provider may well answer next time.
TRANSIENT_KINDS: frozenset[str] = frozenset({"timeout", "connection", "rate_limit", "server"})


class SearchError(Exception):
    """A search that did not produce results. ``message`` never contains the API key."""

    def __init__(self, kind: SearchErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: SearchErrorKind = kind
        self.message = message

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_KINDS


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result with its scraped markdown (empty strings when the provider had none)."""

    url: str
    title: str
    markdown: str
    published: str = ""  # as the provider reported it (free text, often YYYY-MM-DD)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What a window asks for (DOMAIN.md 3.1 step 2)."""

    query: str
    country: str
    start_date: dt.date
    end_date: dt.date
    limit: int

    @property
    def text(self) -> str:
        """The provider query string, as the original engine built it."""
        return f"{self.query} {self.country} news articles"

    @property
    def tbs(self) -> str:
        """Google-style custom date range: ``cdr:1,cd_min:MM/DD/YYYY,cd_max:MM/DD/YYYY``."""
        return (
            f"cdr:1,cd_min:{self.start_date.strftime('%m/%d/%Y')},"
            f"cd_max:{self.end_date.strftime('%m/%d/%Y')}"
        )


class SearchAdapter(Protocol):
    """A news search with markdown scraping, bounded by a per-request timeout."""

    name: str

    def search(
        self,
        query: str,
        country: str,
        start_date: dt.date,
        end_date: dt.date,
        limit: int,
    ) -> list[SearchHit]:
        """Up to ``limit`` hits. Raises :class:`SearchError` on any provider failure."""
        ...
