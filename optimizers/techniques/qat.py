"""Quantization-aware training: fake-quantized Linear weights (straight-through estimator)
fine-tuned for a bounded number of steps on the calibration batches, then converted to real
int8 / int4 modules. Loss: next-token CE (LMs), CE on labelled images, else distillation."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import StepRecord, Technique, curve_figures
from optimizers.quant.calibrate import calibrated_copy
from optimizers.quant.config import GroupConfig, check_bits_field
from optimizers.quant.modules import QuantLinearInt4, QuantLinearInt8, check_group_size, replace_linears
from optimizers.quant.qat import FakeQuantLinear, train_fake_quant
from optimizers.registry import register


class QatConfig(GroupConfig):
    bits: int = Field(4, description="weight bits: 8 (per-channel) or 4 (group-wise)")
    steps: int = Field(50, description="optimizer steps over the calibration batches (1-2000)")
    lr: float = Field(1e-5, description="AdamW learning rate for the fine-tune")

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        return check_bits_field(v, (4, 8))

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if not 1 <= v <= 2000:
            raise ValueError(f"steps={v} must be between 1 and 2000; try 50")
        return v


@register
class Qat(Technique):
    name = "qat"
    needs_linear = True
    replaces_linear = True
    summary = "QAT: fake-quant fine-tune (STE) of int8/int4 weights, then real packed weights"
    Config = QatConfig
    needs_calibration = True

    def apply(self, workload, config) -> StepRecord:
        model, pred, linears = calibrated_copy(workload, self.name, config.include_lm_head)
        group = check_group_size(linears, config.group_size) if config.bits == 4 else 0
        replace_linears(model, pred, lambda n, lin: FakeQuantLinear.from_linear(
            lin, config.bits, group, config.symmetric))
        losses = train_fake_quant(model, workload.model, workload.calibration, workload.task, config.steps, config.lr)
        if config.bits == 8:
            convert = lambda n, m: QuantLinearInt8.from_linear(m)  # noqa: E731
        else:
            convert = lambda n, m: QuantLinearInt4.from_linear(m, group, config.symmetric)  # noqa: E731
        replace_linears(model, lambda n, m: isinstance(m, FakeQuantLinear), convert)
        model.requires_grad_(False)
        return StepRecord(workload.with_model(model), diagnostics=curve_figures("qat_loss", losses),
                          details={"qat_losses": losses})
