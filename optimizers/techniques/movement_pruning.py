"""Movement pruning (Sanh, Wolf & Rush, Movement Pruning: Adaptive Sparsity by Fine-Tuning, NeurIPS
2020), the hard (top-v) variant: while fine-tuning, each weight's score accumulates its movement
S = −Σ_t ∂L/∂W·W (eq. 6), so weights the task pushes towards zero score low whatever their size;
the mask keeps the top scores, with sparsity raised on the cubic schedule of GMP."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from optimizers.registry import register
from optimizers.techniques.gmp import Gmp, GmpConfig
from optimizers.training import sparse


class MovementPruningConfig(GmpConfig):
    prune_from: float = Field(0.25, ge=0, lt=1, description="fraction of the steps the movement scores accumulate "
                                                             "before the first mask (Sanh et al.'s warm-up)")
    scope: Literal["global", "layer"] = Field("layer", description="rank scores within each matrix (Sanh et al.'s "
                                                                   "per-matrix top-v; movement scales differ by layer) "
                                                                   "or over all layers")


@register
class MovementPruning(Gmp):
    name = "movement_pruning"
    summary = "prune the weights fine-tuning moves towards zero (first-order movement scores, Sanh et al.)"
    Config = MovementPruningConfig
    scorer = sparse.Movement
    what = "accumulated movement −Σ ∂L/∂W·W"
