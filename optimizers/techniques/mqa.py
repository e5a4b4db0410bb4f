"""Multi-query attention by conversion (Shazeer 2019; the conversion and uptraining of Ainslie et
al. 2023): ``gqa`` with a single KV head, every query head reading the mean of the old K/V heads."""
from __future__ import annotations

from pydantic import Field

from optimizers.registry import register
from optimizers.techniques.gqa import Gqa, GqaConfig


class MqaConfig(GqaConfig):
    kv_heads: int | None = Field(1, ge=1, le=1, description="one KV head (multi-query attention); gqa for more")


@register
class Mqa(Gqa):
    name = "mqa"
    summary = "pool every K/V head into one (multi-query attention), then uptrain briefly: the smallest KV cache"
    Config = MqaConfig
