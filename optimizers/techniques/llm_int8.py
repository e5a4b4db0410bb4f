"""LLM.int8(): int8 weights; in every batch the input columns whose activations reach the outlier
threshold are multiplied in float, the rest in int8 (vector-wise) — Dettmers et al. 2022's mixed
decomposition, decided at run time. The calibration data is run once through the swapped model
to report how many columns each layer decomposes per batch."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import StepRecord, Technique, layer_error_figures
from optimizers.quant.calibrate import calibrated_copy
from optimizers.quant.config import QuantConfig
from optimizers.quant.mixed import QuantLinearLLMInt8
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
    needs_linear = True
    replaces_linear = True
    summary = "LLM.int8(): int8 weights and activations with outlier feature columns kept in float16"
    Config = LlmInt8Config
    needs_calibration = True

    def apply(self, workload, config) -> StepRecord:
        model, pred, linears = calibrated_copy(workload, self.name, config.include_lm_head)
        replace_linears(model, pred, lambda n, lin: QuantLinearLLMInt8(lin.weight, config.threshold, lin.bias))
        fractions = outlier_fractions(model, workload.calibration)
        worst = max(fractions, key=fractions.get) if fractions else None
        notes = [f"outlier columns per batch on the calibration data: mean {sum(fractions.values()) / max(len(fractions), 1):.2%}"
                 + (f", most in {worst} ({fractions[worst]:.2%})" if worst else "")]
        return StepRecord(workload.with_model(model), notes=notes,
                          diagnostics=layer_error_figures("llm_int8_outlier_fraction", fractions),
                          details={"llm_int8_outlier_fraction": fractions})


def outlier_fractions(model, calibration) -> dict[str, float]:
    """Per layer, the mean fraction of input columns decomposed into float per batch."""
    import torch

    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinearLLMInt8)}
    with torch.inference_mode():
        for batch in calibration:
            model(input_ids=batch)
    out = {n: m.outlier_stats[0] / m.outlier_stats[1] for n, m in layers.items() if m.outlier_stats[1]}
    for m in layers.values():
        m.outlier_stats = [0, 0]  # the measurement that follows counts its own
    return out
