"""LLM.int8(): input columns whose calibration activations reach the outlier threshold stay
in float16, the rest are int8 (vector-wise) — Dettmers et al. 2022's mixed decomposition."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import Technique
from optimizers.quant.calibrate import channel_absmax, calibrated_copy
from optimizers.quant.config import QuantConfig
from optimizers.quant.mixed import QuantLinearLLMInt8, outlier_columns
from optimizers.quant.modules import replace_linears
from optimizers.registry import register


class LlmInt8Config(QuantConfig):
    threshold: float = Field(6.0, description="activation magnitude from which an input column is an outlier kept in float16 (paper: 6.0)")

    @field_validator("threshold")
    @classmethod
    def _thr(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"threshold={v} must be > 0; the paper uses 6.0")
        return v


@register
class LlmInt8(Technique):
    name = "llm_int8"
    family = "quantization"
    summary = "LLM.int8(): int8 weights and activations with outlier feature columns kept in float16"
    Config = LlmInt8Config
    needs_calibration = True

    def apply(self, workload, config):
        model, pred, linears = calibrated_copy(workload, self.name, config.include_lm_head)
        names = list(linears)
        act = channel_absmax(model, names, workload.calibration)
        outliers = {n: outlier_columns(act[n], config.threshold) for n in names}
        replace_linears(model, pred, lambda n, lin: QuantLinearLLMInt8(lin.weight, outliers[n], lin.bias))
        return workload.with_model(model, quantized_layers=names,
                                   llm_int8_outliers={n: int(o.numel()) for n, o in outliers.items()})
