"""LLM.int8() mixed-precision decomposition (Dettmers et al. 2022, arXiv:2208.07339 §3.2):
input feature columns whose activation magnitude reaches the outlier threshold (6.0) are
multiplied in float16; all other columns use vector-wise int8 (per-token activations ×
per-row weights). Outlier columns are fixed from calibration magnitudes here, where
bitsandbytes detects them per batch."""
from __future__ import annotations

import torch

from quant import packing
from optimizers.quant.modules import QuantLinearBase, _flat, int8_matmul, quantize_per_token_int8


def outlier_columns(act_absmax: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """Indices (int64) of input columns j with max |X_j| ≥ threshold."""
    if threshold <= 0:
        raise ValueError(f"threshold={threshold} must be > 0; the paper uses 6.0")
    return torch.nonzero(act_absmax >= threshold).flatten()


class QuantLinearLLMInt8(QuantLinearBase):
    """int8 weights for regular columns, float16 weights for the outlier columns."""

    def __init__(self, weight: torch.Tensor, outliers: torch.Tensor, bias=None):
        n, k = weight.shape
        super().__init__(k, n, bias)
        mask = torch.ones(k, dtype=torch.bool)
        mask[outliers] = False
        regular = torch.nonzero(mask).flatten()
        q, s = packing.quantize_int8_per_channel(weight.detach()[:, regular])
        self.register_buffer("regular_idx", regular.to(torch.int32))  # (K - n_out,)
        self.register_buffer("outlier_idx", outliers.to(torch.int32))  # (n_out,)
        self.register_buffer("qweight", q)  # (N, K - n_out) int8
        self.register_buffer("scale", s)  # (N,) float32
        self.register_buffer("outlier_weight", weight.detach()[:, outliers].half())  # (N, n_out) fp16

    def dequantized_weight(self) -> torch.Tensor:
        w = torch.empty(self.out_features, self.in_features)
        w[:, self.regular_idx.long()] = packing.dequantize_int8_per_channel(self.qweight, self.scale)
        w[:, self.outlier_idx.long()] = self.outlier_weight.float()
        return w

    def forward(self, x):
        x = self._pre(x)
        x2, lead = _flat(x)  # (M, K)
        xr = x2[:, self.regular_idx.long()]
        xq, xs = quantize_per_token_int8(xr)
        y = int8_matmul(xq, self.qweight.t()) * xs * self.scale  # (M, N)
        if self.outlier_idx.numel():
            y = y + x2[:, self.outlier_idx.long()].float() @ self.outlier_weight.float().t()
        return self._post(y.to(x.dtype).reshape(*lead, self.out_features))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", outliers={self.outlier_idx.numel()}"
