"""NF4 weights as in QLoRA: 16 normal-quantile code values, absmax per block of 64 weights,
absmax constants double-quantized to 8 bits in blocks of 256 (~4.13 bits a weight)."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import StepRecord, Technique
from optimizers.quant.config import QuantConfig
from optimizers.quant.modules import copy_model, default_predicate, replace_linears, require_linears
from optimizers.quant.nf4 import QuantLinearNF4
from optimizers.registry import register


class Nf4Config(QuantConfig):
    block_size: int = Field(64, description="weights sharing one absmax (QLoRA: 64); must divide each layer's weight count")
    double_quant: bool = Field(True, description="quantize the absmax constants to 8 bits (QLoRA double quantization)")
    dq_block_size: int = Field(256, description="absmax constants sharing one second-level scale (QLoRA: 256)")

    @field_validator("block_size", "dq_block_size")
    @classmethod
    def _block(cls, v: int, info) -> int:
        if v <= 0 or v & (v - 1):
            raise ValueError(f"{info.field_name}={v} must be a positive power of two; try 64 (block_size) or 256 (dq_block_size)")
        return v


@register
class Nf4(Technique):
    name = "nf4"
    needs_linear = True
    replaces_linear = True
    summary = "NormalFloat-4 weights with block-wise absmax and double quantization (QLoRA storage)"
    Config = Nf4Config

    def apply(self, workload, config) -> StepRecord:
        model = copy_model(workload.model)
        pred = default_predicate(model, config.include_lm_head)
        linears = require_linears(model, pred)
        for n, lin in linears.items():
            if lin.weight.numel() % config.block_size:
                raise ValueError(f"block_size={config.block_size} must divide {n}'s {lin.weight.numel()} weights; try 64 or 32")
        swapped = replace_linears(model, pred, lambda n, lin: QuantLinearNF4.from_linear(
            lin, block_size=config.block_size, double_quant=config.double_quant, dq_block_size=config.dq_block_size))
        return StepRecord(workload.with_model(model), diagnostics={"layers_quantized": float(len(swapped))})
