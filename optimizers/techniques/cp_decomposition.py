"""CP decomposition of conv kernels (Lebedev et al., Speeding-up Convolutional Neural Networks Using
Fine-tuned CP-Decomposition, ICLR 2015): each eligible k_h×k_w Conv2d kernel K (out, in, kh, kw) ≈
Σ_r A[:, r] ⊗ B[:, r] ⊗ C[:, r] ⊗ D[:, r] by ALS, run as 1×1 (in→R) → depthwise kh×1 → depthwise
1×kw → 1×1 (R→out). Grouped/depthwise and 1×1 convs have no 4-way kernel to decompose and stay;
a layer is decomposed only where R·(in + kh + kw + out) < out·in·kh·kw. The paper fine-tunes after;
here the accuracy cost is measured as is (a recovery_finetune step can follow).

Sample playbook step::

    - technique: cp_decomposition
      params: {max_error: 0.1}
"""
from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from torch import nn

from optimizers import tensor_decomp as D
from optimizers.base import TechniqueConfig
from optimizers.registry import register


class CpDecompositionConfig(TechniqueConfig):
    rank: int | None = Field(None, ge=1, description="fixed CP rank R for every layer; set rank or max_error")
    max_error: float | None = Field(0.1, gt=0.0, lt=1.0, description="per layer, the smallest R (binary search, "
                                    "among the ranks that save weights) whose kernel error ‖K − K_R‖/‖K‖ is at most this")
    iters: int = Field(100, ge=1, le=10_000, description="ALS sweeps at most (the digits stem: converged to 3 digits by 100)")
    tol: float = Field(1e-9, ge=0.0, description="stop ALS when the relative error changes by less than this")
    seed: int = Field(0, description="seed of the random columns of the ALS initialisation")
    include: list[str] = Field(["*"], description="fnmatch patterns of Conv2d module names, e.g. ['stem.*']")

    @model_validator(mode="after")
    def _one_rule(self) -> "CpDecompositionConfig":
        if (self.rank is None) == (self.max_error is None):
            raise ValueError("set exactly one of rank or max_error (e.g. {'rank': 8, 'max_error': null})")
        return self


@register
class CpDecomposition(D.ConvDecomposition):
    name = "cp_decomposition"
    summary = "split k×k convs into 1×1 → k×1 → 1×k → 1×1 from a rank-R CP decomposition (ALS) of the kernel"
    Config = CpDecompositionConfig

    def decompose(self, conv: nn.Conv2d, config: CpDecompositionConfig) -> tuple[nn.Module | None, dict[str, Any]]:
        dims = tuple(conv.weight.shape)
        limit = D.cp_max_rank(*dims)
        fits: dict[int, tuple[list, float]] = {}

        def fit(r: int) -> tuple[list, float]:
            if r not in fits:
                fits[r] = D.cp_als(conv.weight, r, config.iters, config.tol, config.seed)
            return fits[r]

        if config.rank is not None:
            r = config.rank
            why = f"R={r} ≥ {limit + 1}: R·(in + kh + kw + out) ≥ out·in·kh·kw (no saving)" if r > limit else ""
        else:
            r, why = self._search(limit, fit, config.max_error)
        if why:
            return None, D.layer_figures(conv, [r], 0, fits[r][1] if r in fits else None, why)
        factors, err = fit(r)
        return D.cp_conv(conv, factors), D.layer_figures(conv, [r], D.cp_params(*dims, r), err)

    @staticmethod
    def _search(limit: int, fit, max_error: float) -> tuple[int, str]:
        """The smallest R in 1..limit meeting ``max_error`` (binary search: ALS error falls with R,
        though not strictly), or the reason none does."""
        if limit < 1:
            return 1, "no CP rank saves weights on this kernel"
        if fit(limit)[1] > max_error:
            return limit, f"even R={limit} (the largest that saves weights) has kernel error {fit(limit)[1]:.3f} > {max_error:g}"
        lo, hi = 1, limit
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fit(mid)[1] <= max_error else (mid + 1, hi)
        return lo, ""
