"""Unstructured magnitude pruning: zero the smallest-|w| weights of every Linear, globally or
per layer (Han et al., Learning both Weights and Connections, 2015), with
``torch.nn.utils.prune`` then ``prune.remove`` so the zeros are baked in. Optionally stores
layers at ≥ ``csr_min_sparsity`` as CSR so stored bytes really drop (dense zeros do not)."""
from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field

from optimizers import sparsity as S
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.workloads.base import Workload


class MagnitudePruningConfig(TechniqueConfig):
    amount: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of Linear weights set to zero")
    scope: Literal["global", "layer"] = Field(
        "global", description="rank |w| over all pruned layers together (global) or within each layer")
    include_lm_head: bool = Field(False, description="also prune the output projection (lm_head); usually costs quality")
    include_conv: bool = Field(False, description="also prune nn.Conv2d kernels (Han et al. prune convolutions too; "
                                                  "they stay stored dense: weight sharing + Huffman then pack the zeros)")
    store_sparse: bool = Field(True, description="store layers whose sparsity reaches csr_min_sparsity as CSR")
    csr_min_sparsity: float = Field(
        0.8, ge=0.5, le=1.0, description="CSR storage threshold; below ~0.8 CSR is slower than dense on CPU (FACTS.md)")


@register
class MagnitudePruning(Technique):
    name = "magnitude_pruning"
    needs_linear = True
    summary = "zero the smallest-magnitude weights (torch.nn.utils.prune); CSR storage above ~80 % sparsity"
    Config = MagnitudePruningConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and not target.has_linear:
            return Verdict("refused", "magnitude_pruning prunes nn.Linear layers and this model has none")
        return verdict

    def apply(self, workload: Workload, config: MagnitudePruningConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        layers = S.prunable_linears(model, config.include_lm_head)
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)] if config.include_conv else []
        if not convs:
            S.require_linears(layers, self.name)
        S.magnitude_prune(layers + convs, config.amount, config.scope)
        achieved = S.layers_sparsity(layers + convs)
        swapped = S.to_csr(model, layers, config.csr_min_sparsity) if config.store_sparse else []
        kinds = f"{len(layers)} Linear" + (f" and {len(convs)} Conv2d" if convs else "")
        notes = [f"{achieved:.1%} of {kinds} layers' weights are zero ({config.scope} L1)",
                 S.storage_note(swapped, len(layers), config.csr_min_sparsity, achieved)]
        return StepRecord(workload.with_model(model), notes=notes)
