"""FP8 (E4M3 / E5M2) weights stored as torch.float8_* with per-row or per-tensor scales;
weight-only runs anywhere (simulated compute on CPU). FP8 activations need torch._scaled_mm
on a CUDA GPU with compute capability ≥ 8.9 (Ada, Hopper, Blackwell)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from optimizers.base import StepRecord, Technique, Verdict
from optimizers.quant.config import QuantConfig
from optimizers.quant.fp8 import QuantLinearFP8
from optimizers.quant.modules import copy_model, default_predicate, replace_linears, require_linears
from optimizers.registry import register


class Fp8Config(QuantConfig):
    fmt: Literal["e4m3", "e5m2"] = Field("e4m3", description="FP8 format: e4m3 (more precision, max 448; inference default) or e5m2 (more range, max 57344)")
    granularity: Literal["per_row", "per_tensor"] = Field("per_row", description="weight scale per output row or one per tensor")
    activations: Literal["none", "dynamic"] = Field("none", description="'none': weight-only; 'dynamic': FP8 activations with per-token scales (needs CUDA cc ≥ 8.9)")


@register
class Fp8(Technique):
    name = "fp8"
    needs_linear = True
    replaces_linear = True
    summary = "FP8 E4M3/E5M2 weights (and activations on cc ≥ 8.9 GPUs): 0.5x fp16 bytes"
    Config = Fp8Config

    def check(self, target, config=None):
        v = super().check(target, config)
        if v.runnable and config is not None and config.activations == "dynamic":
            cap = target.capability
            if target.device != "cuda" or cap is None or tuple(cap) < (8, 9):
                where = "a CPU" if target.device != "cuda" else f"compute capability {cap}"
                return Verdict("needs_gpu", f"fp8 activations need torch._scaled_mm on a CUDA GPU with compute "
                                            f"capability ≥ 8.9 (L4, L40S, H100, B200); this target is {where}. "
                                            f"Use activations='none' (FP8 weight-only) here.")
        return v

    def apply(self, workload, config) -> StepRecord:
        from optimizers.base import Target

        verdict = self.check(Target.of(workload), config)
        if not verdict.runnable:
            raise ValueError(verdict.reason)
        model = copy_model(workload.model)
        pred = default_predicate(model, config.include_lm_head)
        require_linears(model, pred)
        act = config.fmt if config.activations == "dynamic" else None
        swapped = replace_linears(model, pred, lambda n, lin: QuantLinearFP8.from_linear(
            lin, fmt=config.fmt, granularity=config.granularity, act_fmt=act))
        return StepRecord(workload.with_model(model), diagnostics={"layers_quantized": float(len(swapped))})
