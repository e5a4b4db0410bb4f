"""8-bit AdamW (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"): both
moments stored as block-wise dynamically quantized 8-bit codes with one scale per block,
dequantized for each update. torchao.optim's AdamW8bit on the CPU (its first step compiles the
update, one of the untimed warm-up steps); bitsandbytes' on CUDA when installed. Tensors below
torchao's size threshold keep fp32 states."""
from __future__ import annotations

from typing import Any

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import TrainingSetting


class Adam8bitConfig(TechniqueConfig):
    pass


@register
class Adam8bit(TrainingSetting):
    name = "adam_8bit"
    summary = "AdamW with block-quantized 8-bit moments (torchao on CPU, bitsandbytes on CUDA)"
    Config = Adam8bitConfig
    optimizer = "adamw8bit"

    def recipe(self, config: TechniqueConfig) -> dict[str, Any]:
        return {"optimizer": self.optimizer}
