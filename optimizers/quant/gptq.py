"""GPTQ (Frantar et al. 2023, arXiv:2210.17323, Algorithm 1): quantize W column by column,
spreading each column's rounding error over the not-yet-quantized columns through the
Cholesky factor of H⁻¹ (H = 2XᵀX from calibration inputs), in blocks of 128 columns with
lazy batch updates. Follows the reference implementation (IST-DASLab/gptq, gptq.py)."""
from __future__ import annotations

import torch

from optimizers.quant.modules import check_bits, quant_params, quantize_codes


def dead_inputs_zeroed(W: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float copies of W (N, K) and H (K, K) with never-active inputs (diag(H) = 0) made
    harmless: H's diagonal there set to 1, W's columns there set to 0 (the reference's handling)."""
    W = W.detach().clone().float()
    H = H.detach().clone().float()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    return W, H


def inverse_hessian_factor(H: torch.Tensor, damp: float) -> torch.Tensor:
    """The upper Cholesky factor of (H + λI)⁻¹, λ = damp · mean diag(H): row i from column i on
    holds what the OBS update of column i needs (GPTQ and SparseGPT share it)."""
    H = H + damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], device=H.device)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int = 128,
                  act_order: bool = False, damp: float = 0.01, block_size: int = 128,
                  symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (codes uint8 (N, K), scale (N, K/g), zero (N, K/g)) in the contiguous-group
    layout of packing.py. With ``act_order`` columns are visited by decreasing diag(H) and
    group parameters are fixed up front from the original weights ("static groups"), so
    the stored layout needs no g_idx permutation."""
    check_bits(bits, (2, 3, 4))
    if not 0.0 < damp < 1.0:
        raise ValueError(f"damp={damp} must be in (0, 1); 0.01 is the paper's default")
    n, k = W.shape
    if group_size <= 0 or k % group_size:
        raise ValueError(f"group_size={group_size} must divide in_features={k}; try 32 or 64")
    W, H = dead_inputs_zeroed(W, H)

    groups = k // group_size
    if act_order:  # static groups from the original weight
        g_scale, g_zero = quant_params(W.reshape(n, groups, group_size), bits, symmetric)  # (N, G)
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    else:
        g_scale = torch.zeros(n, groups, device=W.device)
        g_zero = torch.zeros(n, groups, device=W.device)
        perm = torch.arange(k, device=W.device)
    invperm = torch.argsort(perm)

    Hinv = inverse_hessian_factor(H, damp)  # (K, K)

    Q = torch.zeros_like(W)  # codes, permuted order
    bs = block_size if block_size % group_size == 0 or act_order else group_size * -(-block_size // group_size)
    for i1 in range(0, k, bs):
        i2 = min(i1 + bs, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            w = W1[:, i]
            d = Hinv1[i, i]
            g = int(perm[col]) // group_size
            if not act_order and col % group_size == 0:  # group starts: fit on updated weights
                g_scale[:, g], g_zero[:, g] = quant_params(W1[:, i:i + group_size], bits, symmetric)
            q = quantize_codes(w, g_scale[:, g], g_zero[:, g], bits)
            Q[:, col] = q
            wq = (q - g_zero[:, g]) * g_scale[:, g]
            err = (w - wq) / d
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    codes = Q[:, invperm].to(torch.uint8)
    return codes, g_scale, g_zero


def hessian_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """tr(ΔW H ΔWᵀ) / tr(W H Wᵀ): the relative output error on the calibration inputs behind H."""
    W = W.detach().float()
    D = W - W_hat.float()  # (N, K)
    return float(torch.einsum("nk,kl,nl->", D, H, D) / torch.einsum("nk,kl,nl->", W, H, W).clamp(min=1e-20))


def layer_output_error(W: torch.Tensor, W_hat: torch.Tensor, X: torch.Tensor) -> float:
    """Relative output error ||X Wᵀ − X Ŵᵀ||² / ||X Wᵀ||² — the objective GPTQ minimises."""
    ref = X @ W.t().float()
    return float((ref - X @ W_hat.t().float()).pow(2).sum() / ref.pow(2).sum())


def gptq_model(model, names: list[str], batches, bits: int = 4, group_size: int = 128, act_order: bool = False,
               damp: float = 0.01, symmetric: bool = False, block_size: int = 128) -> dict[str, float]:
    """Quantize the named Linears of ``model`` in place, block by block: the Hessians of block
    i come from inputs produced by blocks < i already quantized. Returns each layer's
    relative output error on its own calibration inputs (the GPTQ objective, via H)."""
    from optimizers.quant.calibrate import layer_hessians
    from optimizers.quant.modules import QuantLinearInt4, dequantize_groupwise, set_module

    errors: dict[str, float] = {}
    for n, lin, H in layer_hessians(model, names, batches):
        codes, scale, zero = gptq_quantize(lin.weight, H, bits, group_size, act_order, damp, block_size, symmetric)
        errors[n] = hessian_error(lin.weight, dequantize_groupwise(codes, scale, zero, group_size), H)
        set_module(model, n, QuantLinearInt4.from_codes(codes, scale, zero, group_size, lin.bias, bits))
    return errors
