"""Firecrawl-compatible search endpoint: ``POST /firecrawl/v2/search`` (and ``/v2/search``).

Why both paths: the official ``firecrawl-py`` SDK builds URLs with
``urljoin(api_url, "/v2/search")``, which drops any path in ``api_url``; an adapter configured
with ``<simulator>/firecrawl`` therefore calls ``<simulator>/v2/search``. Serving both keeps the
documented layout (``<url>/firecrawl``) and works with the unmodified SDK.

Results come from ``evidence.demo_corpus.articles`` (deterministic: the same query, country and
date range always give the same articles), shaped like Firecrawl's v2 search response with
scraped markdown::

    {"success": true, "data": {"news": [{"url", "title", "snippet", "date", "position",
      "markdown", "metadata": {"title", "sourceURL", "url", "statusCode", "publishedTime"}}]},
     "creditsUsed": n}

The query the engine sends is ``"<query> <country> news articles"``; the simulator recovers
``<query>`` by removing that suffix, the country from ``location``, and the dates from
``tbs=cdr:1,cd_min:MM/DD/YYYY,cd_max:MM/DD/YYYY``.

Fault hooks:

* the simulator's fault rules, aimed with ``"ops": ["search"]`` (``provider`` may be omitted;
  fault rules only accept openai/anthropic as a provider): ``http_500``/``http_429``/
  ``http_503`` answer in Firecrawl's error shape, ``latency``/``timeout`` stall,
  ``drop_connection`` closes the socket;
* markers in the query, for tests that need a fault tied to one window (removed from the
  query before the corpus is consulted):

  ``__zero__``            no results;
  ``__error__``           HTTP 500 ``{"success": false, "error": ...}``;
  ``__slow__`` / ``__slow_<s>__``  answer after 5 s (or ``<s>`` seconds);
  ``__dirty__``           extra hits the collect step must drop: no markdown, empty title,
                          ``http://`` URL, an IP-literal host, a duplicate URL;
  ``__huge__``            the first hit's markdown is inflated to ~300 KB (size-cap tests).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from evidence.demo_corpus import Article, articles
from orchestration.simulator.routing import error_response, json_response, state_of, wrap

PROVIDER = "firecrawl"
SEARCH_PATHS = ("/firecrawl/v2/search", "/v2/search")
QUERY_SUFFIX = " news articles"
MAX_LIMIT = 100
DEFAULT_SLOW_S = 5.0
HUGE_BYTES = 300_000

_MARKER = re.compile(r"__(zero|error|dirty|huge|slow)(?:_(\d+(?:\.\d+)?))?__")
_TBS_DATE = re.compile(r"cd_(min|max):(\d{1,2})/(\d{1,2})/(\d{4})")


def _iso(tbs: str, which: str, default: str) -> str:
    for kind, month, day, year in _TBS_DATE.findall(tbs or ""):
        if kind == which:
            return f"{int(year):04d}-{int(month):02d}-{int(day):02d}"
    return default


def _base_query(query: str, country: str) -> str:
    text = query.strip()
    if text.endswith(QUERY_SUFFIX):
        text = text[: -len(QUERY_SUFFIX)].rstrip()
    if country and text.endswith(" " + country):
        text = text[: -len(country) - 1].rstrip()
    return re.sub(r"\s{2,}", " ", text).strip()


def _item(article: Article, position: int, *, markdown: str | None = None) -> dict[str, Any]:
    body = article.markdown if markdown is None else markdown
    return {
        "url": article.url,
        "title": article.title,
        "snippet": body.split("\n\n", 2)[-1][:160] if body else "",
        "date": article.published,
        "position": position,
        "markdown": body,
        "metadata": {
            "title": article.title,
            "sourceURL": article.url,
            "url": article.url,
            "statusCode": 200,
            "publishedTime": article.published,
            "contentType": "text/markdown",
        },
    }


def _dirty_items(first: Article, start: int) -> list[dict[str, Any]]:
    """Hits the engine must drop (each one for a different reason)."""
    no_markdown = {"url": first.url + "-nomd", "title": first.title, "position": start}
    empty_title = _item(first, start + 1)
    empty_title["url"] = empty_title["metadata"]["url"] = first.url + "-notitle"
    empty_title["metadata"]["sourceURL"] = empty_title["url"]
    empty_title["title"] = empty_title["metadata"]["title"] = ""
    plain_http = _item(first, start + 2)
    plain_http["url"] = plain_http["metadata"]["url"] = "http://news.example/plain-http"
    plain_http["metadata"]["sourceURL"] = plain_http["url"]
    ip_host = _item(first, start + 3)
    ip_host["url"] = ip_host["metadata"]["url"] = "https://10.0.0.7/internal"
    ip_host["metadata"]["sourceURL"] = ip_host["url"]
    duplicate = _item(first, start + 4)
    return [no_markdown, empty_title, plain_http, ip_host, duplicate]


async def search(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error_response(PROVIDER, 400, "Bad Request: the body is not valid JSON.")
    if not isinstance(body, dict) or not str(body.get("query") or "").strip():
        return error_response(PROVIDER, 400, "Bad Request: 'query' is required.")
    raw_query = str(body["query"])
    markers = dict(_MARKER.findall(raw_query))
    country = str(body.get("location") or body.get("country") or "").strip()
    query = _base_query(_MARKER.sub("", raw_query), country)
    try:
        limit = max(1, min(int(body.get("limit") or 5), MAX_LIMIT))
    except (TypeError, ValueError):
        return error_response(PROVIDER, 400, "Bad Request: 'limit' must be an integer.")
    tbs = str(body.get("tbs") or "")
    start = _iso(tbs, "min", "2026-01-01")
    end = _iso(tbs, "max", start)

    if "slow" in markers:
        await state.sleep(float(markers["slow"] or DEFAULT_SLOW_S))
    if "error" in markers:
        return error_response(PROVIDER, 500, "Internal server error (simulated search failure).")
    if "zero" in markers:
        return json_response({"success": True, "data": {"news": []}, "creditsUsed": 0})

    found = articles(query=query or "news", country=country, start=start, end=end, limit=limit)
    items = [_item(article, i + 1) for i, article in enumerate(found)]
    if items and "huge" in markers:
        filler = "\n\n" + ("Lorem ipsum dolor sit amet, ünïcödé filler text. " * 64)
        md = found[0].markdown
        while len(md.encode("utf-8")) < HUGE_BYTES:
            md += filler
        items[0] = _item(found[0], 1, markdown=md)
    if found and "dirty" in markers:
        items.extend(_dirty_items(found[0], len(items) + 1))
    return json_response({"success": True, "data": {"news": items}, "creditsUsed": len(items)})


def add_routes(app: web.Application) -> None:
    handler = wrap(PROVIDER, "search", search)
    for path in SEARCH_PATHS:
        app.router.add_post(path, handler)
