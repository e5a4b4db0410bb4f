"""Half precision: the whole model in bfloat16 or float16 (weights and compute). It is the
16-bit reference real deployments start from, so a playbook can begin with it and every later
ratio reads against 16 bits, not fp32. Sample step: ``{technique: half_precision, params: {dtype: bf16}}``."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from optimizers.base import StepRecord, Technique, TechniqueConfig
from optimizers.quant.modules import copy_model
from optimizers.registry import register

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class HalfPrecisionConfig(TechniqueConfig):
    dtype: Literal["bf16", "fp16"] = Field("bf16", description="bf16 keeps fp32's exponent range; fp16 has more mantissa but can overflow")


@register
class HalfPrecision(Technique):
    name = "half_precision"
    summary = "cast the model to bf16 or fp16: half of fp32's bytes, the 16-bit reference"
    Config = HalfPrecisionConfig

    def apply(self, workload, config) -> StepRecord:
        model = copy_model(workload.model).to(DTYPES[config.dtype])
        return StepRecord(workload.with_model(model), notes=[f"every parameter and buffer cast to {config.dtype}"])
