"""int8 weight-only (W8A16): per-output-channel symmetric int8 weights, float activations;
the weight is upcast inside each call (gpt-fast ``WeightOnlyInt8Linear``)."""
from __future__ import annotations

from optimizers.base import StepRecord, Technique
from optimizers.quant.config import PeerConfig
from optimizers.quant.peer import torchao_peer
from optimizers.quant.modules import QuantLinearInt8, copy_model, default_predicate, replace_linears, require_linears
from optimizers.registry import register
from optimizers.runtimes import llama_cpp


class Int8WeightOnlyConfig(PeerConfig):
    pass


@register
class Int8WeightOnly(Technique):
    name = "int8_weight_only"
    needs_linear = True
    replaces_linear = True
    summary = "int8 per-channel weights, float activations: ~0.5x fp16 weight bytes, near-lossless"
    Config = Int8WeightOnlyConfig

    def apply(self, workload, config) -> StepRecord:
        model = copy_model(workload.model)
        pred = default_predicate(model, config.include_lm_head)
        require_linears(model, pred)
        swapped = replace_linears(model, pred, lambda n, lin: QuantLinearInt8.from_linear(lin))
        peers = {"torchao": torchao_peer(workload, self.name, config.include_lm_head).model} if config.compare_torchao else {}
        notes: list[str] = []
        if config.compare_llama_cpp:
            peers |= llama_cpp.peers_for(workload, "int8", notes)
        return StepRecord(workload.with_model(model), diagnostics={"layers_quantized": float(len(swapped))}, peers=peers,
                          notes=notes)
