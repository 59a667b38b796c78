"""Firecrawl news search through the official ``firecrawl-py`` SDK (v2 ``search``).

The request mirrors the original engine (DOMAIN.md 3.1 step 2): query
``"<query> <country> news articles"``, ``sources=["news"]``, ``location=<country>``, the date
range as ``tbs=cdr:1,cd_min:MM/DD/YYYY,cd_max:MM/DD/YYYY``, ``limit=evidence_limit`` and
markdown scraping (``scrape_options.formats=["markdown"]``).

Why a fresh SDK client per search: a window searches once, so there is nothing to pool, and a
client built per call cannot leak a key across settings overrides. ``max_retries=1``: the
collect step owns retries and classifies errors itself (SDK retries would multiply the
timeout). The per-request timeout is the SDK's HTTP timeout (seconds, per connect/read) and is
also sent to Firecrawl as its server-side ``timeout`` (milliseconds).

SDK quirk worth knowing: the SDK joins endpoint paths with ``urljoin(api_url, "/v2/search")``,
which drops any path in ``api_url``; ``<simulator>/firecrawl`` therefore reaches
``<simulator>/v2/search``, and the simulator serves both paths.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from evidence.search.base import SearchError, SearchErrorKind, SearchHit, SearchQuery
from evidence.search.sandbox import api_url_refusal, scrub

logger = logging.getLogger(__name__)

MAX_LIMIT = 100  # the SDK refuses more


def _kind_for_status(status: int | None) -> SearchErrorKind:
    if status is None:
        return "invalid_response"
    if status in (401, 403):
        return "auth"
    if status == 402:
        return "quota"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server"
    return "bad_request"


class FirecrawlSearch:
    """:class:`~evidence.search.base.SearchAdapter` for Firecrawl (or the simulator)."""

    name = "firecrawl"

    def __init__(self, *, api_key: str, api_url: str, timeout_s: float) -> None:
        refusal = api_url_refusal(api_url)
        if refusal is not None:
            raise SearchError("sandbox", refusal)
        self._api_key = api_key
        self.api_url = api_url
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never the key
        return f"FirecrawlSearch(api_url={self.api_url!r}, timeout_s={self.timeout_s})"

    def search(
        self,
        query: str,
        country: str,
        start_date: dt.date,
        end_date: dt.date,
        limit: int,
    ) -> list[SearchHit]:
        import requests  # type: ignore[import-untyped]
        from firecrawl import Firecrawl
        from firecrawl.v2.types import ScrapeOptions
        from firecrawl.v2.utils.error_handler import FirecrawlError

        q = SearchQuery(
            query=query,
            country=country,
            start_date=start_date,
            end_date=end_date,
            limit=max(1, min(limit, MAX_LIMIT)),
        )
        client = Firecrawl(
            api_key=self._api_key, api_url=self.api_url, timeout=self.timeout_s, max_retries=1
        )
        try:
            data = client.search(
                q.text,
                sources=["news"],
                location=country,
                tbs=q.tbs,
                limit=q.limit,
                timeout=max(1, min(int(self.timeout_s * 1000), 300_000)),
                scrape_options=ScrapeOptions(formats=["markdown"]),
            )
        except FirecrawlError as exc:
            raise self._error(_kind_for_status(exc.status_code), exc) from None
        except requests.Timeout as exc:
            raise self._error(
                "timeout", exc, prefix=f"no answer within {self.timeout_s:g}s"
            ) from None
        except requests.RequestException as exc:
            raise self._error("connection", exc) from None
        except ValueError as exc:  # SDK-side validation (pydantic errors are ValueErrors too)
            raise self._error("bad_request", exc) from None
        return [self._hit(item) for item in (getattr(data, "news", None) or [])]

    def _error(self, kind: SearchErrorKind, exc: BaseException, *, prefix: str = "") -> SearchError:
        detail = scrub(str(exc) or type(exc).__name__, self._api_key)
        message = f"{prefix}: {detail}" if prefix else detail
        return SearchError(kind, f"Firecrawl search failed ({kind}): {message[:1000]}")

    @staticmethod
    def _hit(item: Any) -> SearchHit:
        """A Document (scraped) or a bare news result (no markdown: dropped later)."""
        markdown = getattr(item, "markdown", None)
        metadata = getattr(item, "metadata_typed", None)
        if metadata is not None:
            url = metadata.url or metadata.source_url or metadata.og_url or ""
            title = metadata.title or metadata.og_title or ""
            published = (
                metadata.published_time
                or metadata.dc_date
                or str(metadata.extras.get("date") or "")
            )
        else:
            url = getattr(item, "url", None) or ""
            title = getattr(item, "title", None) or ""
            published = getattr(item, "date", None) or ""
        return SearchHit(
            url=str(url).strip(),
            title=str(title).strip(),
            markdown=str(markdown or ""),
            published=str(published or "")[:40],
        )
