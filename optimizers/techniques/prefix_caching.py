"""Prefix caching (Zheng et al., SGLang's RadixAttention, NeurIPS 2024; vLLM's automatic prefix
caching): full KV pages are hashed by their tokens and the pages of a shared prompt prefix (a
system prompt) are computed once and reused by every later request. transformers' paged cache
with block sharing; the step serves the same trace, so a trace without a shared prefix shows
little gain — set ``trace.shared_prefix_tokens``. Exact: outputs must equal the baseline's."""
from __future__ import annotations

from typing import Any

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import ServingSetting


class PrefixCachingConfig(TechniqueConfig):
    pass


@register
class PrefixCaching(ServingSetting):
    name = "prefix_caching"
    summary = "hash full KV pages and reuse a shared prompt prefix's pages across requests"
    Config = PrefixCachingConfig

    def settings(self, config: TechniqueConfig) -> dict[str, Any]:
        return {"prefix_caching": True}

    def notes(self, config: TechniqueConfig) -> list[str]:
        return ["block sharing on: a request whose prompt starts with full pages already in the cache reuses them "
                "and prefills only the rest (gains need a shared prefix in the trace: trace.shared_prefix_tokens)"]
