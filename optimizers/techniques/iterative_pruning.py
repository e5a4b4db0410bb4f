"""Iterative pruning (Han et al., Learning both Weights and Connections for Efficient Neural
Networks, NeurIPS 2015): prune → fine-tune → prune …, to a target sparsity in ``rounds`` rounds,
each removing the same fraction of the weights still alive (density (1 − s)^(r/R) after round r),
global magnitude, each fine-tune with the mask fixed."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from optimizers import sparsity as S
from optimizers.base import StepRecord
from optimizers.registry import register
from optimizers.training import sparse
from optimizers.training.transform import (SparseBudget, TrainingTransform, fit, record, sparse_result, sparse_start,
                                           teacher_hooks)
from optimizers.workloads.base import Workload


class IterativePruningConfig(SparseBudget):
    rounds: int = Field(3, ge=1, le=100, description="prune/fine-tune rounds (steps is each round's fine-tune)")
    scope: Literal["global", "layer"] = Field("global", description="rank |w| over all layers together or per layer")


def round_sparsity(final: float, r: int, rounds: int) -> float:
    """After round r of R: 1 − (1 − s)^(r/R) — the same fraction of the survivors pruned each round."""
    return 1.0 - (1.0 - final) ** (r / rounds)


@register
class IterativePruning(TrainingTransform):
    name = "iterative_pruning"
    needs_linear = True
    summary = "prune by magnitude and fine-tune with the mask fixed, in rounds, to a target sparsity (Han et al.)"
    Config = IterativePruningConfig

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        model, csr = sparse_start(workload.model)
        rounds, curves, figures = [], [], {}
        for r in range(1, config.rounds + 1):
            target = round_sparsity(config.sparsity, r, config.rounds)
            layers = sparse.prunable(model, config.include_lm_head)
            S.magnitude_prune(layers, target, config.scope)
            masks = sparse.masks_from_zeros(model, 0.0, config.include_lm_head)
            budget = config.model_copy(update={"seed": config.seed + r - 1})  # each round its own batches
            model, figures, details = fit(workload, budget, start=model,
                                          hooks=(*teacher_hooks(workload, config), sparse.MaskedTraining(masks)))
            rounds.append({"round": r, "sparsity": round(S.layers_sparsity(sparse.prunable(model, config.include_lm_head)), 4),
                           "eval_loss_pruned": round(figures["eval_loss_before"], 5),
                           "eval_loss_recovered": round(figures["eval_loss"], 5)})
            curves += details["loss_curve"]
        notes, diag = sparse_result(model, config, csr)
        notes.insert(0, "rounds: " + "; ".join(f"{x['sparsity']:.0%} sparse, eval loss {x['eval_loss_pruned']:.3f} → "
                                               f"{x['eval_loss_recovered']:.3f}" for x in rounds))
        figures |= {"train_steps": float(config.steps * config.rounds),
                    "train_tokens": figures["train_tokens"] * config.rounds}
        return record(workload, model, config, figures, {"loss_curve": curves, "rounds": rounds}, notes,
                      diag | {"sparsity_target": config.sparsity, "rounds": float(config.rounds)})
