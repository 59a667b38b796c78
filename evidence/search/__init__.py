"""Search adapters for window collection (DOMAIN.md 3.1 step 2).

``search_adapter_get(sandbox=...)`` builds the configured adapter from settings:

* base URL: ``FIRECRAWL_API_URL`` when set; else, in simulator mode (``JUDGE_SIMULATOR_URL``),
  ``<simulator>/firecrawl``; else Firecrawl's public API;
* API key: ``FIRECRAWL_API_KEY``; in simulator mode, or with a loopback ``FIRECRAWL_API_URL``
  (a local simulator, as ``configs_app.preflight`` accepts), a dummy key when unset (the
  simulator accepts any bearer key). Anything else without a key is a configuration error.

The key is read here and handed to the adapter only (see ``evidence.search.sandbox``).
"""

from __future__ import annotations

from django.conf import settings

from evidence.search.base import (
    TRANSIENT_KINDS,
    SearchAdapter,
    SearchError,
    SearchHit,
    SearchQuery,
)
from evidence.search.firecrawl import FirecrawlSearch
from evidence.search.sandbox import Sandbox, is_loopback_url

__all__ = [
    "TRANSIENT_KINDS",
    "FirecrawlSearch",
    "Sandbox",
    "SearchAdapter",
    "SearchError",
    "SearchHit",
    "SearchQuery",
    "search_adapter_get",
]

FIRECRAWL_PUBLIC_URL = "https://api.firecrawl.dev"
SIMULATOR_KEY = "fc-simulator"


def search_adapter_get(*, sandbox: Sandbox) -> SearchAdapter:
    """The Firecrawl adapter for the current settings, bounded by ``sandbox.timeout_s``."""
    api_url = getattr(settings, "FIRECRAWL_API_URL", None) or ""
    simulator = getattr(settings, "JUDGE_SIMULATOR_URL", None) or ""
    key = getattr(settings, "FIRECRAWL_API_KEY", None) or ""
    if not api_url:
        api_url = f"{simulator.rstrip('/')}/firecrawl" if simulator else FIRECRAWL_PUBLIC_URL
    if not key:
        if not simulator and not is_loopback_url(api_url):
            raise SearchError(
                "auth",
                "FIRECRAWL_API_KEY is not set; set it (or FIRECRAWL_API_URL for a self-hosted "
                "Firecrawl), or set JUDGE_SIMULATOR_URL to search the built-in simulator",
            )
        key = SIMULATOR_KEY
    return FirecrawlSearch(api_key=key, api_url=api_url, timeout_s=sandbox.timeout_s)
