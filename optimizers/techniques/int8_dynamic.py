"""int8 dynamic quantization of every nn.Linear: per-channel int8 weights, activations
quantized at run time (Jacob et al. 2018), with int32 accumulation.

Two activation granularities:
- ``per_token`` (default): one scale per token (row), the granularity LLM activations need
  (their outlier channels make one scale per batch useless: on smollm2-135m PyTorch's per-batch
  path took perplexity 11.47 → 45.19, the per-token one keeps it near the float model), run by
  ``torch._int_mm`` (oneDNN, VNNI where the CPU has it) in ``QuantLinearInt8(act_int8=True)``;
- ``per_tensor``: PyTorch's classic ``torch.ao.quantization.quantize_dynamic`` (fbgemm), one
  uint8 scale per batch, the original recipe (fine for CNN/encoder activations)."""
from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field, model_validator

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.quant.config import PeerConfig
from optimizers.quant.modules import QuantLinearInt8, default_predicate, replace_linears
from optimizers.quant.peer import torchao_peer
from optimizers.registry import register
from optimizers.runtimes import llama_cpp
from optimizers.workloads.base import Workload


class Int8DynamicConfig(PeerConfig):
    activations: Literal["per_token", "per_tensor"] = Field(
        "per_token", description="activation scale granularity: per_token (one scale per row, oneDNN int8 GEMM) "
        "or per_tensor (PyTorch's quantize_dynamic, fbgemm, one scale per batch)")
    per_channel: bool = Field(True, description="one weight scale per output channel (else one per tensor; per_tensor activations only)")

    @model_validator(mode="after")
    def _granularity(self):
        if not self.per_channel and self.activations == "per_token":
            raise ValueError("per_channel=false (one weight scale per tensor) exists only with activations='per_tensor'; "
                             "keep per_channel=true or set activations: per_tensor")
        return self


@register
class Int8Dynamic(Technique):
    name = "int8_dynamic"
    needs_linear = True
    replaces_linear = True
    summary = "int8 weights, activations quantized per token at run time (int8 GEMM with int32 accumulation)"
    Config = Int8DynamicConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.status == "needs_gpu" or (target.device == "cuda" and verdict.status != "runs"):
            return Verdict("refused", "int8_dynamic uses PyTorch's CPU int8 kernels; on CUDA use int8_weight_only or smoothquant")
        return verdict

    def apply(self, workload: Workload, config: Int8DynamicConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).cpu().eval()
        pick = default_predicate(model, config.include_lm_head)  # the shared layer selection
        if config.activations == "per_token":
            swapped = replace_linears(model, pick, lambda n, lin: QuantLinearInt8.from_linear(lin, act_int8=True))
            if not swapped:
                raise ValueError("int8_dynamic found no nn.Linear layers to quantize in this model")
            qmodel = model
        else:
            qconfig = (
                torch.ao.quantization.per_channel_dynamic_qconfig
                if config.per_channel
                else torch.ao.quantization.default_dynamic_qconfig
            )
            spec = {n: qconfig for n, m in model.named_modules() if pick(n, m)}
            if not spec:
                raise ValueError("int8_dynamic found no nn.Linear layers to quantize in this model")
            swapped = spec
            qmodel = torch.ao.quantization.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8)
        peers = {"torchao": torchao_peer(workload, self.name, config.include_lm_head).model} if config.compare_torchao else {}
        notes: list[str] = []
        if config.compare_llama_cpp:
            peers |= llama_cpp.peers_for(workload, "int8", notes)
        return StepRecord(workload.with_model(qmodel), diagnostics={"layers_quantized": float(len(swapped))}, peers=peers,
                          notes=notes)
