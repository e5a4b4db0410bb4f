"""The attention backend as a runtime setting: PyTorch's fused ``scaled_dot_product_attention``
(``sdpa``: flash / memory-efficient kernels on the device at hand, CPU included) or the eager
matmul-softmax-matmul (``eager``), chosen through transformers' ``attn_implementation``. Exact up
to float reassociation. transformers loads models with ``sdpa`` by default, so the figure to read
is usually ``eager`` against it: what the fused kernel buys on this machine."""
from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field

from optimizers.base import StepRecord, Technique, TechniqueConfig
from optimizers.registry import register
from optimizers.workloads.base import Workload


class SdpaConfig(TechniqueConfig):
    backend: Literal["sdpa", "eager"] = Field("sdpa", description="sdpa: PyTorch's fused attention; eager: plain "
                                                                   "matmul + softmax (the reference)")


def with_attention(workload: Workload, backend: str) -> tuple[Workload, str]:
    """A copy of the workload whose model attends with ``backend``; the backend it had before."""
    model = copy.deepcopy(workload.model)
    before = getattr(model.config, "_attn_implementation", None) or "unknown"
    model.set_attn_implementation(backend)
    return workload.with_model(model), before


@register
class Sdpa(Technique):
    name = "sdpa"
    summary = "choose the attention backend: PyTorch's fused SDPA (flash / memory-efficient) or eager"
    Config = SdpaConfig
    tasks = frozenset({"causal_lm", "encoder"})

    def apply(self, workload: Workload, config: SdpaConfig) -> StepRecord:
        if not hasattr(workload.model, "set_attn_implementation"):
            raise ValueError(f"{type(workload.model).__name__} is not a transformers model: its attention backend "
                             "cannot be chosen")
        out, before = with_attention(workload, config.backend)
        return StepRecord(out, notes=[f"attention backend {before} → {config.backend} (attn_implementation)"])
