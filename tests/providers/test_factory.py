"""get_adapter builds SDK clients from settings (simulator layout, no SDK retries, caching)."""

from __future__ import annotations

import httpx2
import pytest
from django.test import override_settings

from orchestration.transport.providers import (
    AnthropicAdapter,
    OpenAIAdapter,
    get_adapter,
    reset_clients,
)
from orchestration.transport.providers.base import ErrorClass, ProviderError
from tests.providers.conftest import make_requests


@pytest.fixture(autouse=True)
def _fresh_clients():
    reset_clients()
    yield
    reset_clients()


def test_simulator_mode_end_to_end(sim):
    with override_settings(
        JUDGE_SIMULATOR_URL=sim.url,
        OPENAI_API_KEY=None,
        ANTHROPIC_API_KEY=None,
        JUDGE_PROVIDER_TIMEOUT_S=7.0,
    ):
        oa = get_adapter("openai")
        an = get_adapter("anthropic")
        assert isinstance(oa, OpenAIAdapter)
        assert isinstance(an, AnthropicAdapter)
        assert str(oa.client.base_url) == f"{sim.url}/openai/v1/"
        assert str(an.client.base_url) == f"{sim.url}/anthropic/"
        for client in (oa.client, an.client):
            assert client.max_retries == 0
            assert isinstance(client.timeout, httpx2.Timeout)
            assert client.timeout.read == 7.0
        again = get_adapter("openai")
        assert isinstance(again, OpenAIAdapter)
        assert again.client is oa.client  # one pooled client per process
        assert oa.direct_call(make_requests(1)[0], timeout=5).ok
        assert an.direct_call(make_requests(1, model="claude-haiku-4-5")[0], timeout=5).ok


def test_real_mode_uses_configured_urls_and_keys():
    with override_settings(
        JUDGE_SIMULATOR_URL=None,
        OPENAI_API_KEY="sk-real",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        ANTHROPIC_API_KEY="sk-ant-real",
        ANTHROPIC_BASE_URL=None,
    ):
        oa = get_adapter("openai")
        assert isinstance(oa, OpenAIAdapter)
        assert str(oa.client.base_url) == "http://127.0.0.1:9/v1/"
        assert oa.client.api_key == "sk-real"
        an = get_adapter("anthropic")
        assert isinstance(an, AnthropicAdapter)
        assert str(an.client.base_url).startswith("https://api.anthropic.com")


def test_missing_key_and_unknown_provider_are_permanent():
    with override_settings(JUDGE_SIMULATOR_URL=None, OPENAI_API_KEY=None):
        with pytest.raises(ProviderError) as exc_info:
            get_adapter("openai")
        assert exc_info.value.error_class is ErrorClass.PERMANENT
    with pytest.raises(ProviderError):
        get_adapter("azure")


def test_connection_refused_is_timeout():
    with override_settings(JUDGE_SIMULATOR_URL="http://127.0.0.1:9"):
        with pytest.raises(ProviderError) as exc_info:
            get_adapter("openai").get_batch("batch_x")
        assert exc_info.value.error_class is ErrorClass.TIMEOUT
