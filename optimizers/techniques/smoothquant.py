"""SmoothQuant W8A8 (Xiao et al. 2023): migrate activation outliers into the weights with
per-channel s = max|X|^α / max|W|^(1-α) folded into the preceding norm, then int8
per-channel weights and dynamic per-token int8 activations (int8 GEMM via torch._int_mm)."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import StepRecord, Technique
from optimizers.quant.calibrate import calibrated_copy
from optimizers.quant.config import QuantConfig
from optimizers.quant.modules import QuantLinearInt8, replace_linears
from optimizers.quant.smooth import smooth_model
from optimizers.registry import register


class SmoothquantConfig(QuantConfig):
    alpha: float = Field(0.5, description="migration strength α in [0, 1]: share of the activation range moved into the weights (0.5 paper default, 0.75-0.85 for strong outliers)")
    smooth_unfoldable: bool = Field(False, description="also smooth Linears whose 1/s cannot fold into a preceding norm or Linear (o_proj under GQA) via an explicit input scale; not exportable to compressed-tensors")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"alpha={v} must be in [0, 1]; 0.5 is the paper's default")
        return v


@register
class Smoothquant(Technique):
    name = "smoothquant"
    needs_linear = True
    replaces_linear = True
    summary = "SmoothQuant W8A8: activation outliers migrated into weights, then int8 weights and activations"
    Config = SmoothquantConfig
    needs_calibration = True

    def apply(self, workload, config) -> StepRecord:
        model, pred, linears = calibrated_copy(workload, self.name, config.include_lm_head)
        names = list(linears)
        pending, report = smooth_model(model, names, workload.calibration, config.alpha, config.smooth_unfoldable)

        def factory(name, lin):
            q = QuantLinearInt8.from_linear(lin, act_int8=True)
            if name in pending:
                q.set_input_scale(pending[name])
            return q

        replace_linears(model, pred, factory)
        return StepRecord(workload.with_model(model), details={"smoothquant_report": report})
