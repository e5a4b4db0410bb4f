"""int8 dynamic quantization of every nn.Linear: per-channel int8 weights, activations
quantized per batch at run time (Jacob et al. 2018). On CPU this is PyTorch's fbgemm
path (``torch.ao.quantization.quantize_dynamic``), the fastest int8 route here (FACTS.md)."""
from __future__ import annotations

import copy

import torch
from pydantic import Field

from optimizers.base import Target, Technique, TechniqueConfig, Verdict
from optimizers.quant.config import PeerConfig
from optimizers.quant.peer import torchao_peer
from optimizers.registry import register
from optimizers.workloads.base import Workload


class Int8DynamicConfig(PeerConfig):
    per_channel: bool = Field(True, description="one weight scale per output channel (else one per tensor)")


def _skip_names(model: torch.nn.Module, include_lm_head: bool) -> set[str]:
    return set() if include_lm_head else {n for n, _ in model.named_modules() if n.endswith("lm_head")}


@register
class Int8Dynamic(Technique):
    name = "int8_dynamic"
    family = "quantization"
    summary = "int8 weights, activations quantized per batch at run time (fbgemm on CPU)"
    Config = Int8DynamicConfig
    devices = frozenset({"cpu"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.status == "needs_gpu" or (target.device == "cuda" and verdict.status != "runs"):
            return Verdict("refused", "int8_dynamic uses PyTorch's CPU (fbgemm) kernels; on CUDA use int8_weight_only or smoothquant")
        return verdict

    def apply(self, workload: Workload, config: Int8DynamicConfig) -> Workload:
        model = copy.deepcopy(workload.model).cpu().eval()
        skip = _skip_names(model, config.include_lm_head)
        qconfig = (
            torch.ao.quantization.per_channel_dynamic_qconfig
            if config.per_channel
            else torch.ao.quantization.default_dynamic_qconfig
        )
        spec = {n: qconfig for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in skip}
        if not spec:
            raise ValueError("int8_dynamic found no nn.Linear layers to quantize in this model")
        qmodel = torch.ao.quantization.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8)
        peers = {"torchao": torchao_peer(workload, self.name, config.include_lm_head).model} if config.compare_torchao else {}
        return workload.with_model(qmodel, peers=peers)
