"""The model registry: engine model id -> provider, provider model id, batchable, prices.

Defaults follow the original engine (DOMAIN.md section 1: gpt-5.2-chat is not batchable) plus
Anthropic models. A spec may add or override entries under ``models``; the merged registry is
part of the normalized spec, hence of ``spec_signature`` and of the frozen run config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Provider = Literal["openai", "anthropic"]


class ModelInfo(BaseModel):
    """One registry entry. Prices are USD per 1M tokens at standard (non-batch) rates.

    Strict because specs may carry entries (``models:``) and a quoted price or ``"yes"`` for
    ``batchable`` is an authoring mistake, not something to coerce.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    provider: Provider
    provider_model: str = Field(min_length=1)
    batchable: bool = True
    input_price_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    output_price_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    batch_discount: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)


DEFAULT_MODELS: dict[str, ModelInfo] = {
    "gpt-4.1": ModelInfo(
        provider="openai",
        provider_model="gpt-4.1-2025-04-14",
        input_price_per_mtok=2.0,
        output_price_per_mtok=8.0,
    ),
    "gpt-4.1-mini": ModelInfo(
        provider="openai",
        provider_model="gpt-4.1-mini-2025-04-14",
        input_price_per_mtok=0.4,
        output_price_per_mtok=1.6,
    ),
    "gpt-5.2": ModelInfo(
        provider="openai",
        provider_model="gpt-5.2-2025-12-11",
        input_price_per_mtok=1.75,
        output_price_per_mtok=14.0,
    ),
    "gpt-5.2-chat": ModelInfo(
        provider="openai",
        provider_model="gpt-5.2-chat-latest",
        batchable=False,
        input_price_per_mtok=1.75,
        output_price_per_mtok=14.0,
    ),
    "claude-sonnet-4.5": ModelInfo(
        provider="anthropic",
        provider_model="claude-sonnet-4-5",
        input_price_per_mtok=3.0,
        output_price_per_mtok=15.0,
    ),
    "claude-haiku-4.5": ModelInfo(
        provider="anthropic",
        provider_model="claude-haiku-4-5",
        input_price_per_mtok=1.0,
        output_price_per_mtok=5.0,
    ),
}


def cost_usd(info: ModelInfo, *, input_tokens: int, output_tokens: int, batch: bool) -> float:
    """Cost of one call; batch calls get the provider's batch discount."""
    factor = (1.0 - info.batch_discount) if batch else 1.0
    return (
        factor
        * (input_tokens * info.input_price_per_mtok + output_tokens * info.output_price_per_mtok)
        / 1_000_000
    )
