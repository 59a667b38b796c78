"""The scraping sandbox: allowlist, timeout, size cap, secrets (unit + through the simulator)."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from evidence.models import Evidence
from evidence.search import FirecrawlSearch, SearchError, search_adapter_get
from evidence.search.sandbox import (
    Sandbox,
    SandboxConfigError,
    api_url_refusal,
    normalize_domains,
    scrub,
)
from evidence.services.errors import EvidenceInvalid
from evidence.services.windows import window_collect
from orchestration.simulator.faults import parse_faults
from tests.evidence.conftest import drive, make_window


@pytest.mark.parametrize(
    ("domains", "url", "allowed"),
    [
        (None, "https://news.example/a", True),
        (None, "https://www.reuters.com/world/x", True),
        (None, "http://news.example/a", False),  # not https
        (None, "https://10.0.0.7/internal", False),  # IP literal
        (None, "https://[::1]/x", False),
        (None, "https://localhost/x", False),
        (None, "https://intranet/x", False),  # dot-less
        (None, "https://wiki.corp.internal/x", False),
        (None, "https://user:pw@news.example/a", False),  # credentials
        (None, "ftp://news.example/a", False),
        (["news.example"], "https://news.example/a", True),
        (["news.example"], "https://eu.news.example/a", True),  # subdomain
        (["news.example"], "https://badnews.example/a", False),  # not a suffix match
        (["news.example"], "https://www.reuters.com/a", False),
        (["*.example.org"], "https://a.example.org/x", True),
        (["10.0.0.7"], "https://10.0.0.7/x", True),  # explicitly listed
    ],
)
def test_url_policy(domains, url, allowed) -> None:
    sandbox = Sandbox.build(allowed_domains=domains)
    assert (sandbox.url_refusal(url) is None) is allowed


def test_allowlist_entries_are_validated() -> None:
    assert normalize_domains([" News.Example. ", "news.example", ""]) == ("news.example",)
    assert normalize_domains([]) == ("*",)
    for bad in ("https://news.example", "news.example/path", "news.example:443"):
        with pytest.raises(SandboxConfigError):
            normalize_domains([bad])
    with pytest.raises(EvidenceInvalid):
        make_window(allowed_domains=["https://x.org"])  # needs no DB: fails before the insert


def test_markdown_cap_and_note() -> None:
    sandbox = Sandbox.build(max_markdown_bytes=10)
    assert sandbox.cap_markdown("short") == ("short", "")
    text, note = sandbox.cap_markdown("ééééééé")  # 14 bytes; never split a character
    assert text == "ééééé"
    assert "truncated to 10 of 14 bytes" in note


def test_secrets_never_leave_the_adapter() -> None:
    assert scrub("bad key fc-secret-123 rejected", "fc-secret-123") == "bad key *** rejected"
    adapter = FirecrawlSearch(
        api_key="fc-secret-123", api_url="https://api.firecrawl.dev", timeout_s=5
    )
    assert "fc-secret-123" not in repr(adapter)
    assert api_url_refusal("http://api.example.com") is not None  # key never in cleartext
    assert api_url_refusal("http://127.0.0.1:8765/firecrawl") is None
    with pytest.raises(SearchError) as err:
        FirecrawlSearch(api_key="k", api_url="http://search.example.com", timeout_s=1)
    assert err.value.kind == "sandbox"
    with (
        override_settings(JUDGE_SIMULATOR_URL=None, FIRECRAWL_API_URL=None, FIRECRAWL_API_KEY=None),
        pytest.raises(SearchError, match="FIRECRAWL_API_KEY is not set"),
    ):
        search_adapter_get(sandbox=Sandbox())


@pytest.mark.django_db(transaction=True)
def test_dirty_hits_are_dropped_and_counted(simulator, eager_celery) -> None:
    make_window(query="fascism __dirty__", evidence_limit=3, target_stage="l0_raw")
    run = drive(window_collect(tag="w-hu").pk)
    assert run.status == "completed"
    # 3 good hits + 5 bad: no markdown, empty title, http://, IP host, duplicate url.
    assert (run.search_count, run.dropped_count) == (8, 5)
    urls = list(Evidence.objects.filter(window_run=run).values_list("url", flat=True))
    assert len(urls) == 3
    assert all(u.startswith("https://news.example/") for u in urls)


@pytest.mark.django_db(transaction=True)
def test_allowlist_enforced_per_window(simulator, eager_celery) -> None:
    make_window(evidence_limit=4, allowed_domains=["other.example"])
    run = drive(window_collect(tag="w-hu").pk)
    assert run.status == "completed"
    assert (run.search_count, run.dropped_count) == (4, 4)
    assert not Evidence.objects.exists()
    assert run.resolved_policy["sandbox"]["allowed_domains"] == ["other.example"]


@pytest.mark.django_db(transaction=True)
def test_search_timeout_enforced(simulator, eager_celery) -> None:
    make_window(query="fascism __slow_3__", search_timeout_s=0.4)
    started = time.monotonic()
    run = drive(window_collect(tag="w-hu").pk)
    elapsed = time.monotonic() - started
    assert run.status == "failed"
    assert "(timeout)" in run.last_error
    assert "no answer within 0.4s" in run.last_error
    assert elapsed < 2 * 3  # two attempts cut at 0.4 s each, not two full 3 s responses


@pytest.mark.django_db(transaction=True)
def test_slow_fault_rule_within_timeout_succeeds(simulator, eager_celery) -> None:
    simulator.state.faults.replace(
        parse_faults([{"fault": "latency", "sleep_s": 0.3, "ops": ["search"]}])
    )
    make_window(evidence_limit=2, target_stage="l0_raw", search_timeout_s=5)
    run = drive(window_collect(tag="w-hu").pk)
    assert run.status == "completed"
    assert Evidence.objects.filter(window_run=run).count() == 2


@pytest.mark.django_db(transaction=True)
def test_markdown_size_cap_through_collect(simulator, eager_celery) -> None:
    make_window(query="fascism __huge__", evidence_limit=2, target_stage="l0_raw")
    run = drive(window_collect(tag="w-hu").pk)
    assert run.status == "completed"
    assert run.truncated_count == 1
    huge = Evidence.objects.get(window_run=run, l0_note__contains="truncated")
    assert len(huge.l0_raw.encode("utf-8")) <= 200_000
    assert "sandbox cap 200000" in huge.l0_note
