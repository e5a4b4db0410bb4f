"""BF16 mixed precision (Micikevicius et al. 2018; Kalamkar et al. 2019): ``torch.autocast``
runs matmuls and most ops in bfloat16 while the weights, gradients and optimizer stay fp32
(master weights); bf16 keeps fp32's exponent range, so no loss scaling. On a CPU without
AMX / AVX-512-BF16 the bf16 matmuls are slower than fp32 (FACTS.md): measured, not assumed."""
from __future__ import annotations

from typing import Any

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import TrainingSetting


class Bf16MixedPrecisionConfig(TechniqueConfig):
    pass


@register
class Bf16MixedPrecision(TrainingSetting):
    name = "bf16_mixed_precision"
    summary = "bfloat16 autocast over fp32 master weights (no loss scaling)"
    Config = Bf16MixedPrecisionConfig
    precision = "bf16"

    def recipe(self, config: TechniqueConfig) -> dict[str, Any]:
        return {"precision": self.precision}
