"""Paged KV cache (Kwon et al., PagedAttention, SOSP 2023): the KV cache lives in fixed-size pages
mapped by a block table, so a request holds only the pages its tokens fill (waste < one page per
request) instead of a rectangle sized for the longest sequence. transformers' paged cache, which
its continuous-batching scheduler runs on; the figure to read is ``kv_cache_used_fraction``."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import ServingSetting


class PagedKVCacheConfig(TechniqueConfig):
    page_size: int = Field(16, ge=4, le=1024, description="tokens per page (vLLM's default block size is 16)")
    num_blocks: int | None = Field(None, ge=4, le=1_000_000,
                                   description="pages in the pool; default: max_concurrency × the longest request, +10 %")


@register
class PagedKvCache(ServingSetting):
    name = "paged_kv_cache"
    summary = "KV cache in fixed-size pages mapped by a block table: near-zero fragmentation"
    Config = PagedKVCacheConfig

    def settings(self, config: PagedKVCacheConfig) -> dict[str, Any]:
        return {"kv_page_size": config.page_size, "kv_num_blocks": config.num_blocks}

    def notes(self, config: PagedKVCacheConfig) -> list[str]:
        return [f"paged KV cache, {config.page_size}-token pages; transformers pages the cache only under its "
                "continuous-batching scheduler, so this step serves through it"]
