"""RigL (Evci et al., Rigging the Lottery: Making All Tickets Winners, ICML 2020): train at a fixed
sparsity; every ``every`` steps each layer drops its ζ_t smallest active weights and regrows as
many inactive connections with the largest dense-gradient magnitude (ζ decays on a cosine, ends
at ``update_until``). Starting from a pretrained model the initial mask is global magnitude."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.base import StepRecord
from optimizers.registry import register
from optimizers.training import sparse
from optimizers.training.transform import (SparseBudget, TrainingTransform, fit, record, sparse_result, sparse_start,
                                           teacher_hooks)
from optimizers.workloads.base import Workload


class RiglConfig(SparseBudget):
    drop_fraction: float = Field(0.3, gt=0, lt=1, description="ζ: fraction of each layer's active weights swapped "
                                                              "at the first update (cosine-decayed after)")
    every: int = Field(10, ge=1, le=100_000, description="steps between drop/regrow updates (ΔT)")
    update_until: float = Field(0.75, gt=0, le=1, description="fraction of the steps after which the mask is fixed")


@register
class Rigl(TrainingTransform):
    name = "rigl"
    needs_linear = True
    summary = "fixed-sparsity training: drop small weights, regrow by gradient magnitude (RigL)"
    Config = RiglConfig
    regrow = "gradient"

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        start, csr = sparse_start(workload.model)
        end = max(1, round(config.update_until * config.steps))
        hook = sparse.DropRegrow(config.sparsity, self.regrow, config.drop_fraction, config.every, end,
                                 config.seed, config.include_lm_head)
        model, figures, details = fit(workload, config, start=start, hooks=(*teacher_hooks(workload, config), hook))
        notes, diag = sparse_result(model, config, csr)
        notes.insert(0, f"{config.sparsity:.0%} sparse from the start (global magnitude); {hook.updates} drop/regrow "
                        f"updates ({self.regrow} regrowth), each layer's non-zero count constant")
        return record(workload, model, config, figures, details, notes,
                      diag | {"mask_updates": float(hook.updates), "sparsity_target": config.sparsity})
