"""int4 weight-only: group-wise round-to-nearest int4 (RTN), two codes a byte with per-group
scale and zero point (packing.py layout); CPU forward dequantizes per call, CUDA uses the
Triton ``matmul_w4a16`` kernel when present (torchao's int4 configs need CUDA: FACTS.md)."""
from __future__ import annotations

from optimizers.base import StepRecord, Technique
from optimizers.quant.config import GroupConfig, RuntimePeerConfig
from optimizers.quant.modules import (QuantLinearInt4, check_group_size, copy_model, cpu_int4_path_note, default_predicate,
                                      replace_linears, require_linears)
from optimizers.registry import register
from optimizers.runtimes import llama_cpp


class Int4WeightOnlyConfig(GroupConfig, RuntimePeerConfig):
    pass


@register
class Int4WeightOnly(Technique):
    name = "int4_weight_only"
    needs_linear = True
    replaces_linear = True
    summary = "group-wise round-to-nearest int4 weights (RTN), ~0.28x fp16 weight bytes at group 128"
    Config = Int4WeightOnlyConfig

    def apply(self, workload, config) -> StepRecord:
        model = copy_model(workload.model)
        pred = default_predicate(model, config.include_lm_head)
        group = check_group_size(require_linears(model, pred), config.group_size)
        swapped = replace_linears(model, pred, lambda n, lin: QuantLinearInt4.from_linear(lin, group, config.symmetric))
        notes: list[str] = cpu_int4_path_note(workload.model, workload.device)
        peers = llama_cpp.peers_for(workload, "int4", notes) if config.compare_llama_cpp else {}
        return StepRecord(workload.with_model(model), diagnostics={"layers_quantized": float(len(swapped)), "group_size": float(group)},
                          peers=peers, notes=notes)
