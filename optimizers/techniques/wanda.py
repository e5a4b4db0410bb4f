"""Wanda: prune by |W_ij|·‖X_j‖₂, weight magnitude times the input channel's activation norm
over calibration tokens, compared within each output row; one forward pass, no weight update
(Sun et al., A Simple and Effective Pruning Approach for LLMs, ICLR 2024). Unstructured or
N:M (2:4). ``backend="torchao"`` runs ``torchao.sparsity.WandaSparsifier`` instead, which
compares over the whole layer and scores with the squared norm ‖X_j‖₂²."""
from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field

from optimizers import sparsity as S
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.workloads.base import Workload


class WandaConfig(TechniqueConfig):
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of weights zeroed (unstructured pattern)")
    pattern: Literal["unstructured", "2:4"] = Field(
        "unstructured", description="2:4 keeps 2 of every 4 consecutive weights (50 %, Ampere+ sparse kernels)")
    backend: Literal["native", "torchao"] = Field(
        "native", description="native: the paper's per-output-row |W|·‖X‖₂; torchao: WandaSparsifier (per layer, ‖X‖₂²)")
    calibration_batches: int = Field(8, ge=1, description="calibration batches run to collect activation norms")
    include_lm_head: bool = Field(False, description="also prune the output projection (lm_head)")
    store_sparse: bool = Field(True, description="store layers at ≥ csr_min_sparsity as CSR so stored bytes drop")
    csr_min_sparsity: float = Field(0.8, ge=0.5, le=1.0, description="CSR storage threshold (CSR beats dense above ~0.8 on CPU)")


def _native(model: torch.nn.Module, layers: S.Named, calib: list, cfg: WandaConfig) -> None:
    norms = S.input_norms(model, layers, calib)  # all from the dense model, as in the paper's one-shot variant
    with torch.no_grad():
        for name, lin in layers:
            score = S.wanda_scores(lin.weight, norms[name])  # (out, in)
            keep = S.nm_mask(score, 2, 4) if cfg.pattern == "2:4" else S.topk_mask(score, cfg.sparsity, per_row=True)
            S.apply_mask(lin, keep)


def _torchao(model: torch.nn.Module, layers: S.Named, calib: list, cfg: WandaConfig) -> None:
    from torchao.sparsity import WandaSparsifier

    sp = WandaSparsifier(sparsity_level=cfg.sparsity, semi_structured_block_size=4 if cfg.pattern == "2:4" else None)
    sp.prepare(model, [{"tensor_fqn": f"{n}.weight"} for n, _ in layers])
    with torch.no_grad():
        for batch in calib:
            model(**batch) if isinstance(batch, dict) else model(batch)
    sp.step()
    sp.squash_mask()


@register
class Wanda(Technique):
    name = "wanda"
    needs_linear = True
    summary = "one-shot pruning by |weight| x input-activation norm (unstructured or 2:4), no retraining"
    Config = WandaConfig
    needs_calibration = True

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and not target.has_linear:
            return Verdict("refused", "wanda prunes nn.Linear layers and this model has none")
        if verdict.runnable and isinstance(config, WandaConfig) and config.pattern == "2:4":
            return Verdict("runs", "2:4 pattern: accuracy effect measured; speed-up needs CUDA sparse kernels "
                                   "(compute capability ≥ 8.0), none on CPU")
        return verdict

    def apply(self, workload: Workload, config: WandaConfig) -> StepRecord:
        if not workload.calibration:
            raise ValueError("wanda needs calibration data: the workload has no calibration batches")
        model = copy.deepcopy(workload.model).eval()
        layers = S.prunable_linears(model, config.include_lm_head)
        S.require_linears(layers, self.name)
        if config.pattern == "2:4" and (bad := [n for n, m in layers if m.in_features % 4]):
            raise ValueError(f"2:4 needs in_features divisible by 4; not so for {bad[:3]}; use pattern='unstructured'")
        calib = workload.calibration[: config.calibration_batches]
        (_torchao if config.backend == "torchao" else _native)(model, layers, calib, config)
        layers = S.prunable_linears(model, config.include_lm_head)
        achieved = S.layers_sparsity(layers)
        swapped = S.to_csr(model, layers, config.csr_min_sparsity) if config.store_sparse else []
        notes = [f"{achieved:.1%} of {len(layers)} Linear layers' weights are zero (wanda {config.pattern}, "
                 f"{config.backend}, {len(calib)} calibration batches)",
                 S.storage_note(swapped, len(layers), config.csr_min_sparsity, achieved)]
        if config.pattern == "2:4":
            notes.append("2:4 has no CPU speed-up; on CUDA (cc ≥ 8.0) torch's to_sparse_semi_structured would run it")
        return StepRecord(workload.with_model(model), notes=notes)
