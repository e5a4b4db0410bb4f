"""Tucker-2 decomposition of conv kernels (Kim et al., Compression of Deep Convolutional Neural
Networks for Fast and Low Power Mobile Applications, ICLR 2016): each eligible k_h×k_w Conv2d kernel
K (out, in, kh, kw) ≈ core ×_out U_out ×_in U_in by HOSVD (+ a few HOOI rounds), run as 1×1
(in→R_in) → kh×kw core (R_in→R_out) → 1×1 (R_out→out); a mode whose rank keeps every channel needs
no 1×1. The paper picks ranks by VBMF; here each channel mode's rank is the smallest holding
``energy`` of its unfolding's Σσ² (or a fixed ``rank`` / ``ranks``). Grouped/depthwise convs have
nothing to decompose; 1×1 convs are matrices, factorized by truncated SVD only with ``pointwise``.
A layer is decomposed only where the chain holds fewer weights. No fine-tuning here (the paper
fine-tunes; a recovery_finetune step can follow).

Sample playbook step::

    - technique: tucker_decomposition
      params: {energy: 0.9, pointwise: true}
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from optimizers import lowrank as L
from optimizers import tensor_decomp as D
from optimizers.base import TechniqueConfig
from optimizers.registry import register


class TuckerDecompositionConfig(TechniqueConfig):
    rank: int | None = Field(None, ge=1, description="one rank for both channel modes (capped at out / in); set one "
                                                     "of rank, ranks, energy")
    ranks: tuple[int, int] | None = Field(None, description="(R_out, R_in) for every layer (capped at out / in)")
    energy: float | None = Field(0.9, gt=0.0, le=1.0, description="per channel mode, the smallest rank holding this "
                                                                  "fraction of the unfolding's Σσ² (instead of VBMF)")
    hooi_iters: int = Field(2, ge=0, le=100, description="HOOI refinement rounds after the HOSVD (0: HOSVD alone)")
    pointwise: bool = Field(False, description="also factorize 1×1 convs (a matrix) into two 1×1 convs by truncated SVD")
    include: list[str] = Field(["*"], description="fnmatch patterns of Conv2d module names, e.g. ['blocks.*']")

    @model_validator(mode="after")
    def _one_rule(self) -> "TuckerDecompositionConfig":
        if sum(v is not None for v in (self.rank, self.ranks, self.energy)) != 1:
            raise ValueError("set exactly one of rank, ranks or energy (e.g. {'ranks': [16, 8], 'energy': null})")
        if self.ranks is not None and min(self.ranks) < 1:
            raise ValueError(f"ranks={list(self.ranks)} must be ≥ 1")
        return self


@register
class TuckerDecomposition(D.ConvDecomposition):
    name = "tucker_decomposition"
    summary = "split k×k convs into 1×1 → k×k core → 1×1 from a Tucker-2 (HOSVD/HOOI) of the kernel's channel modes"
    Config = TuckerDecompositionConfig

    def decompose(self, conv: nn.Conv2d, config: TuckerDecompositionConfig) -> tuple[nn.Module | None, dict[str, Any]]:
        out_c, in_c, kh, kw = conv.weight.shape
        if (kh, kw) == (1, 1):
            return self._pointwise(conv, config)
        if config.energy is not None:
            r_out, r_in = D.tucker2_ranks_for_energy(conv.weight, config.energy)
        else:
            r_out, r_in = config.ranks or (config.rank, config.rank)
            r_out, r_in = min(r_out, out_c), min(r_in, in_c)
        after = D.tucker2_params(out_c, in_c, kh, kw, r_out, r_in)
        if after >= conv.weight.numel():
            return None, D.layer_figures(conv, [r_out, r_in], after, None,
                                         f"ranks ({r_out}, {r_in}) hold {after:,} ≥ {conv.weight.numel():,} weights (no saving)")
        core, u_out, u_in = D.tucker2(conv.weight, (r_out, r_in), config.hooi_iters)
        err = D.rel_error(conv.weight, D.tucker2_reconstruct(core, u_out, u_in))
        return D.tucker_conv(conv, core, u_out, u_in), D.layer_figures(conv, [r_out, r_in], after, err)

    @staticmethod
    def _pointwise(conv: nn.Conv2d, config: TuckerDecompositionConfig) -> tuple[nn.Module | None, dict[str, Any]]:
        """A 1×1 conv's Tucker-2 is its SVD: rank from ``energy``, else ``rank`` (or the smaller of ``ranks``)."""
        w = conv.weight.reshape(conv.out_channels, conv.in_channels)
        s = torch.linalg.svdvals(w.detach().double())
        if config.energy is not None:
            r = L.rank_for_energy(s, config.energy)
        else:
            r = min(config.rank or min(config.ranks), *w.shape)
        if not L.saves_params(*w.shape, r):
            return None, D.layer_figures(conv, [r], L.factored_params(*w.shape, r), None,
                                         f"rank {r}: r·(out + in) ≥ out·in (no saving)")
        return D.pointwise_svd_conv(conv, r), D.layer_figures(conv, [r], L.factored_params(*w.shape, r), L.tail_error(s, r))
