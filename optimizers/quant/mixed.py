"""LLM.int8() mixed-precision decomposition (Dettmers et al. 2022, arXiv:2208.07339 §3.2), decided
per batch as the paper and bitsandbytes do: in each forward pass the input feature columns in
which any token reaches the outlier threshold (6.0) are multiplied in 16-bit float (activations
unquantized, the int8 weight columns dequantized); every other column uses vector-wise int8
(per-token activations × per-row weights). Weights are stored int8 once, for all columns."""
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
    """int8 weights (per row) for every column; the outlier columns of each batch in float.
    ``outlier_stats`` counts, over the calls so far, the columns decomposed and the columns seen."""

    def __init__(self, weight: torch.Tensor, threshold: float = 6.0, bias=None):
        n, k = weight.shape
        super().__init__(k, n, bias)
        if threshold <= 0:
            raise ValueError(f"threshold={threshold} must be > 0; the paper uses 6.0")
        q, s = packing.quantize_int8_per_channel(weight.detach())
        self.register_buffer("qweight", q)  # (N, K) int8
        self.register_buffer("scale", s)  # (N,) float32
        self.threshold = float(threshold)
        self.outlier_stats = [0, 0]  # [outlier columns, columns] summed over calls (not state)
        self.last_outliers = torch.empty(0, dtype=torch.int64)

    def dequantized_weight(self) -> torch.Tensor:
        return packing.dequantize_int8_per_channel(self.qweight, self.scale)

    def forward(self, x):
        x = self._pre(x)
        x2, lead = _flat(x)  # (M, K)
        idx = outlier_columns(x2.detach().abs().amax(dim=0), self.threshold)  # this batch's outliers
        self.last_outliers = idx
        self.outlier_stats[0] += idx.numel()
        self.outlier_stats[1] += self.in_features
        regular = x2
        if idx.numel():
            regular = x2.clone()
            regular[:, idx] = 0  # the outliers neither enter the int8 product nor set its scales
        xq, xs = quantize_per_token_int8(regular)
        y = int8_matmul(xq, self.qweight.t()) * xs * self.scale  # (M, N)
        if idx.numel():
            w_out = self.qweight[:, idx].float() * self.scale[:, None]  # (N, n_out) dequantized columns
            y = y + x2[:, idx].float() @ w_out.t()
        return self._post(y.to(x.dtype).reshape(*lead, self.out_features))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", threshold={self.threshold}"
