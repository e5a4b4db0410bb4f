"""Chunked prefill (Agrawal et al., Sarathi-Serve, OSDI 2024): a step processes at most
``max_batch_tokens`` tokens, so a long prompt is split over several steps and batched with the
running requests' decode tokens instead of stalling them. transformers' continuous-batching
scheduler splits prompts beyond its token budget; exact, like the scheduler itself."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import ServingSetting


class ChunkedPrefillConfig(TechniqueConfig):
    max_batch_tokens: int = Field(128, ge=8, le=1_000_000,
                                  description="tokens per scheduler step (prefill chunks + decode tokens)")


@register
class ChunkedPrefill(ServingSetting):
    name = "chunked_prefill"
    summary = "split long prompts into chunks batched with ongoing decodes, so prefill does not stall them"
    Config = ChunkedPrefillConfig

    def settings(self, config: ChunkedPrefillConfig) -> dict[str, Any]:
        return {"max_batch_tokens": config.max_batch_tokens}

    def notes(self, config: ChunkedPrefillConfig) -> list[str]:
        return [f"at most {config.max_batch_tokens} tokens per scheduler step: longer prompts prefill in chunks "
                "between decode steps (TPOT tail ↓, TTFT of long prompts ↑)"]
