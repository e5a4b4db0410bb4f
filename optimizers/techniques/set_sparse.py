"""SET (Mocanu et al., Scalable training of artificial neural networks with adaptive sparse
connectivity, Nature Communications 2018): RigL's fixed-sparsity drop-and-regrow with the regrown
connections chosen at random instead of by gradient — the comparison RigL was measured against."""
from __future__ import annotations

from optimizers.registry import register
from optimizers.techniques.rigl import Rigl, RiglConfig


@register
class SetSparse(Rigl):
    name = "set_sparse"
    summary = "fixed-sparsity training: drop small weights, regrow at random (SET)"
    Config = RiglConfig
    regrow = "random"
