"""Gradual magnitude pruning (Zhu & Gupta, To prune, or not to prune, 2017): during fine-tuning,
raise the sparsity along s_t = s_f·(1 − (1 − t/t_end)³) every ``every`` steps, pruning each layer by
magnitude among its weights still alive (or by global magnitude), then fine-tune at the final sparsity for the rest of the
budget — the network recovers between pruning steps instead of all at once."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from optimizers.base import StepRecord
from optimizers.registry import register
from optimizers.training import sparse
from optimizers.training.transform import (SparseBudget, TrainingTransform, fit, record, sparse_result, sparse_start,
                                           teacher_hooks)
from optimizers.workloads.base import Workload


class GmpConfig(SparseBudget):
    prune_from: float = Field(0.0, ge=0, lt=1, description="fraction of the steps before pruning starts (scores "
                                                            "warm up; Sanh et al.'s initial warm-up)")
    prune_until: float = Field(0.75, gt=0, le=1, description="fraction of the steps by which sparsity reaches its target; "
                                                             "the rest fine-tunes at the final sparsity")
    every: int = Field(4, ge=1, le=100_000, description="steps between mask updates (Δt)")
    scope: Literal["global", "layer"] = Field("layer", description="prune each matrix to the scheduled sparsity "
                                                                   "(layer, Zhu & Gupta's) or rank over all layers")


def schedule(config: Any) -> tuple[int, int]:
    """The steps (t₀, t_end) over which sparsity rises."""
    begin, end = round(config.prune_from * config.steps), max(1, round(config.prune_until * config.steps))
    if begin >= end:
        raise ValueError(f"prune_from={config.prune_from} must come before prune_until={config.prune_until} "
                         f"(steps {begin} and {end} of {config.steps})")
    return begin, end


@register
class Gmp(TrainingTransform):
    name = "gmp"
    needs_linear = True
    summary = "raise magnitude sparsity on a cubic schedule while fine-tuning (Zhu & Gupta)"
    Config = GmpConfig
    scorer = sparse.GradualMagnitude
    what = "global |w|"

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        start, csr = sparse_start(workload.model)
        begin, end = schedule(config)
        hook = self.scorer(config.sparsity, begin, end, config.every, config.include_lm_head, config.scope)
        model, figures, details = fit(workload, config, start=start, hooks=(*teacher_hooks(workload, config), hook))
        notes, diag = sparse_result(model, config, csr)
        notes.insert(0, f"sparsity 0 → {config.sparsity:.0%} on the cubic schedule over steps {begin + 1}–{end} "
                        f"(mask updated every {config.every} steps by {self.what}, {config.scope}), then fine-tuned at it")
        return record(workload, model, config, figures, details, notes, diag | {"sparsity_target": config.sparsity})
