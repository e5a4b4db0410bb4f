"""BF16 mixed precision (Micikevicius et al. 2018; Kalamkar et al. 2019): ``torch.autocast``
runs matmuls and most ops in bfloat16 while the weights, gradients and optimizer stay fp32
(master weights); bf16 keeps fp32's exponent range, so no loss scaling. On a CPU without
AMX / AVX-512-BF16 the bf16 matmuls are slower than fp32 (FACTS.md): measured, not assumed."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.base import Target, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.scenarios.settings import TrainingSetting


class Bf16MixedPrecisionConfig(TechniqueConfig):
    on_emulating_cpu: bool = Field(False, description="run it on a CPU without native 16-bit arithmetic too "
                                                      "(emulated: an order of magnitude slower than fp32)")


@register
class Bf16MixedPrecision(TrainingSetting):
    name = "bf16_mixed_precision"
    summary = "bfloat16 autocast over fp32 master weights (no loss scaling)"
    Config = Bf16MixedPrecisionConfig
    precision = "bf16"
    native_flags: tuple[str, ...] = ("avx512_bf16", "amx_bf16")  # CPU features with bf16 dot products

    def recipe(self, config: TechniqueConfig) -> dict[str, Any]:
        return {"precision": self.precision}

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable or target.device != "cpu" or getattr(config, "on_emulating_cpu", False):
            return verdict
        from optimizers.measure import cpu_flags, cpu_isa

        if cpu_flags() & set(self.native_flags):
            return verdict
        return Verdict("refused", f"this CPU ({cpu_isa()}) has none of {', '.join(self.native_flags)}: {self.precision} "
                                  "autocast would emulate 16-bit matmuls, 13–29× slower than fp32 here (FACTS.md; "
                                  "benchmarks/TRAINING.md measures it on ref-lm); set on_emulating_cpu: true to "
                                  "measure it anyway, or run on a GPU worker")
