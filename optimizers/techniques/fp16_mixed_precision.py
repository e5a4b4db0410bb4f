"""FP16 mixed precision with dynamic loss scaling (Micikevicius et al. 2018): ``torch.autocast``
in float16 over fp32 master weights, and ``torch.amp.GradScaler`` scaling the loss so small
gradients do not underflow fp16 (steps whose gradients overflow are skipped and the scale lowered)."""
from __future__ import annotations

from optimizers.registry import register
from optimizers.techniques.bf16_mixed_precision import Bf16MixedPrecision, Bf16MixedPrecisionConfig


class Fp16MixedPrecisionConfig(Bf16MixedPrecisionConfig):
    pass


@register
class Fp16MixedPrecision(Bf16MixedPrecision):
    name = "fp16_mixed_precision"
    summary = "float16 autocast with GradScaler loss scaling over fp32 master weights"
    Config = Fp16MixedPrecisionConfig
    precision = "fp16"
    native_flags = ("avx512_fp16", "amx_fp16")
