"""int8 dynamic quantization of every nn.Linear: per-channel int8 weights, activations
quantized per batch at run time (Jacob et al. 2018). On CPU this is PyTorch's fbgemm
path (``torch.ao.quantization.quantize_dynamic``), the fastest int8 route here (FACTS.md)."""
from __future__ import annotations

import copy

import torch
from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.quant.config import PeerConfig
from optimizers.quant.modules import default_predicate
from optimizers.quant.peer import torchao_peer
from optimizers.registry import register
from optimizers.workloads.base import Workload


class Int8DynamicConfig(PeerConfig):
    per_channel: bool = Field(True, description="one weight scale per output channel (else one per tensor)")


@register
class Int8Dynamic(Technique):
    name = "int8_dynamic"
    needs_linear = True
    replaces_linear = True
    summary = "int8 weights, activations quantized per batch at run time (fbgemm on CPU)"
    Config = Int8DynamicConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.status == "needs_gpu" or (target.device == "cuda" and verdict.status != "runs"):
            return Verdict("refused", "int8_dynamic uses PyTorch's CPU (fbgemm) kernels; on CUDA use int8_weight_only or smoothquant")
        return verdict

    def apply(self, workload: Workload, config: Int8DynamicConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).cpu().eval()
        pick = default_predicate(model, config.include_lm_head)  # the shared layer selection
        qconfig = (
            torch.ao.quantization.per_channel_dynamic_qconfig
            if config.per_channel
            else torch.ao.quantization.default_dynamic_qconfig
        )
        spec = {n: qconfig for n, m in model.named_modules() if pick(n, m)}
        if not spec:
            raise ValueError("int8_dynamic found no nn.Linear layers to quantize in this model")
        qmodel = torch.ao.quantization.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8)
        peers = {"torchao": torchao_peer(workload, self.name, config.include_lm_head).model} if config.compare_torchao else {}
        return StepRecord(workload.with_model(qmodel), peers=peers)
