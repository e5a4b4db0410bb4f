"""N:M semi-structured sparsity by magnitude: keep the N largest |w| of every M consecutive
weights of each row — 2:4 (Mishra et al., Accelerating Sparse Deep Neural Networks, 2021),
and 4:8, 1:4, … (Zhou et al., Learning N:M Fine-grained Structured Sparse Neural Networks
From Scratch, ICLR 2021). On CUDA (compute capability ≥ 8.0, fp16/bf16) 2:4 weights become
``torch.sparse.to_sparse_semi_structured`` tensors and run on sparse tensor cores; on CPU the
accuracy effect is real but there is no speed-up (FACTS.md), and the zeros stay dense unless
the pattern is sparse enough for CSR (≥ ``csr_min_sparsity``, e.g. 1:8)."""
from __future__ import annotations

import copy

import torch
from pydantic import Field, field_validator

from optimizers import sparsity as S
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.workloads.base import Workload


class NmSparsityConfig(TechniqueConfig):
    pattern: str = Field("2:4", description="'N:M': N weights kept of every M consecutive ones (2:4, 4:8, 1:4 …)")
    include_lm_head: bool = Field(False, description="also prune the output projection (lm_head)")
    semi_structured: bool = Field(True, description="on CUDA (cc ≥ 8.0, fp16/bf16), run 2:4 weights as sparse semi-structured tensors")
    store_sparse: bool = Field(True, description="store layers at ≥ csr_min_sparsity (e.g. 1:8) as CSR so stored bytes drop")
    csr_min_sparsity: float = Field(0.8, ge=0.5, le=1.0, description="CSR storage threshold (CSR beats dense above ~0.8 on CPU)")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if S.parse_nm(v) is None:
            raise ValueError("nm_sparsity needs an 'N:M' pattern such as '2:4'; for unstructured use magnitude_pruning")
        return v


@register
class NmSparsity(Technique):
    name = "nm_sparsity"
    needs_linear = True
    summary = "N:M magnitude mask on every Linear (2:4 runs on Ampere+ sparse tensor cores; 4:8, 1:4 … for accuracy or CSR)"
    Config = NmSparsityConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        if not target.has_linear:
            return Verdict("refused", "nm_sparsity prunes nn.Linear layers and this model has none")
        n, m = S.parse_nm(getattr(config, "pattern", "2:4"))
        if (n, m) != (2, 4) and target.device == "cuda":
            return Verdict("runs", f"{n}:{m} is measured for its accuracy; sparse tensor cores execute 2:4 only")
        if target.device == "cuda" and target.capability is not None and target.capability < (8, 0):
            return Verdict("runs", f"compute capability {target.capability[0]}.{target.capability[1]} < 8.0: "
                                   "no sparse tensor cores; the mask is applied but runs on dense kernels")
        if target.device == "cpu":
            return Verdict("runs", "on CPU the accuracy effect is measured but there is no speed-up "
                                   "(2:4 kernels need CUDA compute capability ≥ 8.0)")
        return verdict

    def apply(self, workload: Workload, config: NmSparsityConfig) -> StepRecord:
        n, m = S.parse_nm(config.pattern)
        model = copy.deepcopy(workload.model).eval()
        layers = S.prunable_linears(model, config.include_lm_head)
        S.require_linears(layers, self.name)
        if bad := [name for name, lin in layers if lin.in_features % m]:
            raise ValueError(f"{n}:{m} needs in_features divisible by {m}; not so for {bad[:3]}")
        with torch.no_grad():
            for _, lin in layers:
                S.apply_mask(lin, S.nm_mask(lin.weight.abs(), n, m))
        achieved = S.layers_sparsity(layers)
        notes = [f"{n}:{m} mask on {len(layers)} Linear layers ({achieved:.1%} zeros)"]
        fast = S.semi_structured(model, layers) if config.semi_structured and (n, m) == (2, 4) else []
        if fast:
            notes.append(f"{len(fast)}/{len(layers)} layers run as 2:4 semi-structured sparse tensors (sparse tensor cores)")
        else:
            swapped = S.to_csr(model, layers, config.csr_min_sparsity) if config.store_sparse else []
            notes.append(S.storage_note(swapped, len(layers), config.csr_min_sparsity, achieved))
            if (n, m) == (2, 4):
                notes.append("no 2:4 speed-up here: CUDA cc ≥ 8.0 with fp16/bf16 weights and "
                             "to_sparse_semi_structured is where 2:4 pays")
        return StepRecord(workload.with_model(model), notes=notes)
