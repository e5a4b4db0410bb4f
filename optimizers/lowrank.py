"""Low-rank primitives: truncated SVD of a weight (Eckart–Young: the best rank-r approximation,
error = norm of the dropped singular values), rank from an energy fraction or an error bound, and
the swap of a Linear for two smaller Linears (Denton et al. 2014; Jaderberg et al. 2014)."""
from __future__ import annotations

import torch
from torch import nn


def truncated_svd(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W (out, in) ≈ B @ A with B (out, r) = U_r·√S_r and A (r, in) = √S_r·Vh_r (balanced factors)."""
    if not 1 <= rank <= min(w.shape):
        raise ValueError(f"rank={rank} must be in 1..min{tuple(w.shape)}={min(w.shape)}")
    u, s, vh = torch.linalg.svd(w.detach().double(), full_matrices=False)  # (out, k) (k,) (k, in)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(w.dtype), (root[:, None] * vh[:rank]).to(w.dtype)


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """Smallest r whose top-r singular values hold ``energy`` of Σ s² (the squared Frobenius norm)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy={energy} must be in (0, 1]")
    cum = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
    return int(torch.searchsorted(cum, torch.tensor(energy - 1e-12, dtype=torch.float64, device=s.device))) + 1


def tail_error(s: torch.Tensor, rank: int) -> float:
    """‖W − W_r‖_F / ‖W‖_F of the best rank-r approximation: √(Σ_{i>r} s_i²) / √(Σ s_i²) (Eckart–Young)."""
    s2 = s.double() ** 2
    return float((s2[rank:].sum() / s2.sum()).sqrt())


def rank_for_error(s: torch.Tensor, max_error: float) -> int:
    """Smallest r with ``tail_error(s, r) ≤ max_error``: the rank holding 1 − max_error² of Σ s²."""
    if not 0.0 < max_error < 1.0:
        raise ValueError(f"max_error={max_error} must be in (0, 1); 1 would allow rank 0")
    return rank_for_energy(s, 1.0 - max_error**2)


def factored_params(out_f: int, in_f: int, rank: int) -> int:
    return rank * (out_f + in_f)


def saves_params(out_f: int, in_f: int, rank: int) -> bool:
    """r·(out + in) < out·in: only then is the factorization smaller (and fewer FLOPs)."""
    return factored_params(out_f, in_f, rank) < out_f * in_f


def factorize_linear(lin: nn.Linear, rank: int) -> nn.Sequential:
    """Two Linears (in → r, r → out; the bias on the second) computing x @ (B A)ᵀ + b."""
    b, a = truncated_svd(lin.weight, rank)
    first = nn.Linear(lin.in_features, rank, bias=False, device=lin.weight.device, dtype=lin.weight.dtype)
    second = nn.Linear(rank, lin.out_features, bias=lin.bias is not None, device=lin.weight.device, dtype=lin.weight.dtype)
    with torch.no_grad():
        first.weight.copy_(a)
        second.weight.copy_(b)
        if lin.bias is not None:
            second.bias.copy_(lin.bias)
    return nn.Sequential(first, second)
