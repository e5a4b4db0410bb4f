"""Error measures shared by ``kernels/`` and ``optimizers/`` (the ground floor, so neither imports
the other): one relative error and one SQNR, each with the reference first."""
from __future__ import annotations

import math

import torch


def rel_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ (Frobenius) in float64; the absolute error when ``ref`` is all zeros."""
    ref64, out64 = ref.detach().double(), out.detach().double()
    norm = float(ref64.norm())
    diff = float((out64 - ref64).norm())
    return diff / norm if norm > 0 else diff


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖ref‖² / ‖ref − out‖²) in dB; +inf when identical."""
    ref64, out64 = ref.detach().double(), out.detach().double()
    noise = float((ref64 - out64).pow(2).sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(float(ref64.pow(2).sum()) / noise)
