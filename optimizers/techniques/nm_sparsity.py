"""2:4 semi-structured sparsity by magnitude: keep the 2 largest |w| of every 4 consecutive
weights of each row (Mishra et al., Accelerating Sparse Deep Neural Networks, 2021). Ampere+
sparse tensor cores (compute capability ≥ 8.0) run it ~1.5x faster; on CPU the accuracy
effect is real but there is no speed-up (FACTS.md), and the zeros stay stored dense."""
from __future__ import annotations

import copy

import torch
from pydantic import Field

from optimizers import sparsity as S
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.workloads.base import Workload


class NmSparsityConfig(TechniqueConfig):
    include_lm_head: bool = Field(False, description="also prune the output projection (lm_head)")


@register
class NmSparsity(Technique):
    name = "nm_sparsity"
    needs_linear = True
    summary = "2:4 magnitude mask on every Linear: 50 % zeros in the pattern Ampere+ sparse tensor cores run"
    Config = NmSparsityConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        if not target.has_linear:
            return Verdict("refused", "nm_sparsity prunes nn.Linear layers and this model has none")
        if target.device == "cuda" and target.capability is not None and target.capability < (8, 0):
            return Verdict("runs", f"compute capability {target.capability[0]}.{target.capability[1]} < 8.0: "
                                   "no sparse tensor cores; the mask is applied but runs on dense kernels")
        if target.device == "cpu":
            return Verdict("runs", "on CPU the accuracy effect is measured but there is no speed-up "
                                   "(2:4 kernels need CUDA compute capability ≥ 8.0)")
        return verdict

    def apply(self, workload: Workload, config: NmSparsityConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        layers = S.prunable_linears(model, config.include_lm_head)
        S.require_linears(layers, self.name)
        if bad := [n for n, m in layers if m.in_features % 4]:
            raise ValueError(f"2:4 needs in_features divisible by 4; not so for {bad[:3]}")
        with torch.no_grad():
            for _, lin in layers:
                S.apply_mask(lin, S.nm_mask(lin.weight.abs(), 2, 4))
        notes = [f"2:4 mask on {len(layers)} Linear layers ({S.layers_sparsity(layers):.1%} zeros)",
                 "weights stay dense: zeros are stored, so stored_bytes does not drop; no CPU speed-up — "
                 "CUDA cc ≥ 8.0 with to_sparse_semi_structured is where 2:4 pays"]
        return StepRecord(workload.with_model(model), notes=notes)
