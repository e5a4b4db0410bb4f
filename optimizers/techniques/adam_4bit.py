"""4-bit AdamW (Li et al. 2023, "Memory Efficient Optimizers with 4-bit States"): moments in 4
bits with smaller blocks and a rank-1 normalization of the second moment; torchao.optim's
AdamW4bit (its first step compiles, untimed)."""
from __future__ import annotations

from optimizers.registry import register
from optimizers.techniques.adam_8bit import Adam8bit, Adam8bitConfig


class Adam4bitConfig(Adam8bitConfig):
    pass


@register
class Adam4bit(Adam8bit):
    name = "adam_4bit"
    summary = "AdamW with 4-bit moments (torchao)"
    Config = Adam4bitConfig
    optimizer = "adamw4bit"
