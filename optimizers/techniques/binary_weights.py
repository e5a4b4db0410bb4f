"""Binary weights, XNOR-Net's BWN (Rastegari et al., XNOR-Net, ECCV 2016, §3.1): W ≈ α·sign(W)
with α = ‖W‖₁/n per output channel (filter), the least-squares optimum for the sign pattern
(their eq. 3–6). Stored as 1-bit codes, eight a byte, plus one fp16 α per channel. Activations stay
float (the XNOR-Net variant that also binarizes inputs needs bit-op kernels). The first layer and
the classifier stay fp32.

Sample playbook step::

    - technique: binary_weights
"""
from __future__ import annotations

import torch
from pydantic import Field

from optimizers.base import layer_error_figures
from optimizers.quant import coded as C
from optimizers.registry import register


class BinaryWeightsConfig(C.LowBitConfig):
    per_channel: bool = Field(True, description="one α per output channel (XNOR-Net: per filter) or one per layer")


def binarize(w: torch.Tensor, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(B int8 in {−1, +1} (w's shape; sign(0) = +1), α = mean|W| (rows,))."""
    alpha = C.per_channel_rows(w.detach().float(), per_channel).abs().mean(1)
    return torch.where(w.detach() >= 0, 1, -1).to(torch.int8), alpha


def binary_codes(w: torch.Tensor, per_channel: bool = True) -> C.Codes:
    """1-bit codes: 0 → −α, 1 → +α (α rounded to fp16, its storage)."""
    b, alpha = binarize(w, per_channel)
    levels = torch.tensor([-1.0, 1.0], device=w.device)
    return C.Codes((b > 0).to(torch.uint8), levels, alpha.half().float(), 1, zero_code=False)


@register
class BinaryWeights(C.LowBitTechnique):
    name = "binary_weights"
    summary = "XNOR-Net/BWN binary weights α·sign(W), α = mean|W| per channel, 1-bit packed"
    Config = BinaryWeightsConfig
    codes = staticmethod(binary_codes)

    def describe_result(self, model, errors, config):
        return (layer_error_figures("binary_rel_error", errors),
                f"binary weights α·sign(W), α = mean|W| per {'channel' if config.per_channel else 'layer'}")
