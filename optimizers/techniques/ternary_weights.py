"""Ternary weights, TWN (Li, Zhang & Liu, Ternary Weight Networks, 2016): per layer (or per output
channel) the threshold Δ = 0.7·mean|W| (their approximation of the optimal Δ* for Gaussian or
uniform weights), W_t = +α where W > Δ, −α where W < −Δ, 0 otherwise, with α = mean of |W| over
|W| > Δ — the least-squares scale for that ternary pattern. Stored as 2-bit codes, four a byte,
plus one fp16 scale per layer (or channel). The first layer and the classifier stay fp32.

Sample playbook step::

    - technique: ternary_weights
      params: {per_channel: false}
"""
from __future__ import annotations

import torch
from pydantic import Field

from optimizers.base import layer_error_figures
from optimizers.quant import coded as C
from optimizers.registry import register

DELTA_FACTOR = 0.7  # TWN eq. 9: Δ* ≈ 0.7·E|W|


class TernaryWeightsConfig(C.LowBitConfig):
    per_channel: bool = Field(False, description="one α and Δ per output channel instead of per layer (TWN: per layer)")


def ternarize(w: torch.Tensor, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T int8 in {−1, 0, +1} (w's shape), α (rows,), Δ (rows,)); rows: 1, or one per output channel."""
    a = C.per_channel_rows(w.detach().float(), per_channel).abs()  # (rows, n)
    delta = DELTA_FACTOR * a.mean(1)  # (rows,)
    keep = a > delta[:, None]
    alpha = (a * keep).sum(1) / keep.sum(1).clamp(min=1)  # mean |W| over |W| > Δ
    t = torch.sign(w.detach()).to(torch.int8) * keep.reshape(w.shape)
    return t, alpha, delta


def ternary_codes(w: torch.Tensor, per_channel: bool = False) -> C.Codes:
    """2-bit codes: 0 → 0, 1 → +α, 2 → −α (α rounded to fp16, its storage)."""
    t, alpha, _ = ternarize(w, per_channel)
    codes = torch.where(t < 0, 2, t).to(torch.uint8)
    levels = torch.tensor([1.0, -1.0], device=w.device)
    return C.Codes(codes, levels, alpha.half().float(), 2, zero_code=True)


@register
class TernaryWeights(C.LowBitTechnique):
    name = "ternary_weights"
    summary = "TWN ternary weights {−α, 0, +α} (Δ = 0.7·mean|W|), 2-bit packed with an fp16 scale per layer"
    Config = TernaryWeightsConfig
    codes = staticmethod(ternary_codes)

    def describe_result(self, model, errors, config):
        zeros = [float(m.codes().eq(0).float().mean()) for m in C.coded_modules(model)]
        figures = {**layer_error_figures("ternary_rel_error", errors), "zero_fraction": sum(zeros) / len(zeros)}
        return figures, (f"ternary weights, Δ = {DELTA_FACTOR}·mean|W|, α per "
                         f"{'channel' if config.per_channel else 'layer'}; {figures['zero_fraction']:.0%} of coded "
                         "weights are 0")
