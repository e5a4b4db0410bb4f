"""Recovery fine-tuning after compression: a short fine-tune of the pruned or quantized model on
the training split — plain (the task's loss) or distilled from the model before compression
(Hinton KD) — with the compression kept: pruned weights get no gradient and stay exactly zero,
quantized layers stay frozen on their grids (the float parameters around them train). What
Han et al. 2015's "retrain" stage and the LLM-pruning papers' "recovery" fine-tune do."""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from optimizers.base import StepRecord
from optimizers.registry import register
from optimizers.training import sparse
from optimizers.training.distill import Distiller
from optimizers.training.transform import TrainBudget, TrainingTransform, fit, record, sparse_result, sparse_start
from optimizers.workloads.base import Workload


class RecoveryFinetuneConfig(TrainBudget):
    teacher: Literal["none", "original"] = Field(
        "none", description="none: the task's loss; original: distil from the model before compression")
    temperature: float = Field(2.0, gt=0, le=100, description="distillation temperature (teacher=original)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's soft targets (teacher=original)")


def revived(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> int:
    """Weights non-zero where their mask says pruned (must be 0 after a masked fine-tune)."""
    mods = dict(model.named_modules())
    return sum(int(((mods[n].weight != 0) & ~keep).sum()) for n, keep in masks.items() if n in mods)


@register
class RecoveryFinetune(TrainingTransform):
    name = "recovery_finetune"
    summary = "a short fine-tune after pruning or quantization, masks and quantization grids kept (optionally KD)"
    Config = RecoveryFinetuneConfig

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        start, csr = sparse_start(workload.model)
        masks = sparse.masks_from_zeros(start, include_lm_head=True)
        hooks: tuple = (sparse.MaskedTraining(masks, include_lm_head=True),)
        notes = []
        if config.teacher == "original":
            if workload.original is None:
                raise ValueError("teacher=original: no earlier step changed the model, so there is no model before "
                                 "compression to learn from; use teacher=none or put the compression step first")
            hooks = (Distiller(workload.original, config.temperature, config.alpha), *hooks)
            notes.append(f"distilled from the model before compression (T = {config.temperature:g}, "
                         f"α = {config.alpha:g})")
        frozen = sum(1 for m in start.modules() if type(m).__name__.startswith("QuantLinear"))
        if frozen:
            notes.append(f"{frozen} quantized layers stay frozen on their grids; the float parameters around them "
                         "(embeddings, norms, biases, unquantized layers) train")
        model, figures, details = fit(workload, config, start=start, hooks=hooks)
        diag = {"masked_layers": float(len(masks)), "pruned_weights_revived": float(revived(model, masks))}
        if masks:
            more, s = sparse_result(model, config, csr)
            notes += more
            diag["sparsity"] = s["sparsity"]
            notes.append(f"{len(masks)} pruned layers kept their masks ({int(diag['pruned_weights_revived'])} "
                         "pruned weights non-zero after training)")
        return record(workload, model, config, figures, details, notes, diag)
