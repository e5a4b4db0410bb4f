"""SparseGPT (Frantar & Alistarh, SparseGPT: Massive Language Models Can Be Accurately Pruned
in One-Shot, ICML 2023, Algorithm 1): prune W column by column with the OBS update — each
pruned (or quantized) column's error is spread over the not-yet-visited columns through the
upper Cholesky factor of H⁻¹ (H = 2XᵀX over calibration inputs, the GPTQ machinery). The mask
is chosen adaptively per block of ``block_size`` columns by the OBS saliency w² / [H⁻¹]²_cc
(unstructured: the smallest fraction of the block over all rows; N:M: the N smallest of every M
consecutive columns, row by row), and joint quantization rounds the surviving weights on the
group grid inside the same sweep. Layers are pruned block after block of the model, each on
inputs that passed the already-pruned blocks, as in the reference (IST-DASLab/sparsegpt)."""
from __future__ import annotations

import torch

from optimizers.quant.gptq import dead_inputs_zeroed, inverse_hessian_factor
from optimizers.quant.modules import check_bits, quant_params, quantize_codes


def check_pattern(sparsity: float, n: int, m: int) -> None:
    if n or m:
        if not 0 < n < m:
            raise ValueError(f"N:M = {n}:{m} must have 0 < N < M (N zeros of every M weights), e.g. 2:4")
    elif not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity} must be in [0, 1)")


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5, prune_n: int = 0, prune_m: int = 0,
                    bits: int | None = None, group_size: int = 128, damp: float = 0.01, block_size: int = 128,
                    symmetric: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    """Returns (pruned weight (N, K) float32, codes) — ``codes`` = (uint8 codes, scale, zero) in the
    contiguous-group layout of QuantLinearInt4 when ``bits`` is set (pruned weights sit exactly on
    the grid's zero), else None. ``prune_n``:``prune_m`` > 0 gives N:M, N zeros of every M."""
    check_pattern(sparsity, prune_n, prune_m)
    if not 0.0 < damp < 1.0:
        raise ValueError(f"damp={damp} must be in (0, 1); 0.01 is the paper's default")
    n_rows, k = W.shape
    if prune_m and k % prune_m:
        raise ValueError(f"N:M with M={prune_m} needs in_features divisible by {prune_m}; {k} is not")
    if bits is not None:
        check_bits(bits, (2, 3, 4))
        if group_size <= 0 or k % group_size:
            raise ValueError(f"group_size={group_size} must divide in_features={k}; try 32 or 64")
        if block_size % group_size:
            block_size = group_size * -(-block_size // group_size)  # groups never straddle a block
        scale = torch.zeros(n_rows, k // group_size, device=W.device)
        zero = torch.zeros_like(scale)
        codes = torch.zeros(n_rows, k, dtype=torch.uint8, device=W.device)
    if prune_m and block_size % prune_m:
        block_size = prune_m * -(-block_size // prune_m)
    W, H = dead_inputs_zeroed(W, H)
    Hinv = inverse_hessian_factor(H, damp)

    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)
        if prune_m:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)  # True = pruned; filled every M columns
        else:  # the block's smallest saliencies over all rows (adaptive mask selection)
            saliency = W1.pow(2) / d1.pow(2)[None, :]
            drop = int(saliency.numel() * sparsity)
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
            if drop:
                mask1.view(-1)[saliency.flatten().argsort()[:drop]] = True
        for i in range(i2 - i1):
            col = i1 + i
            if prune_m and i % prune_m == 0:
                saliency = W1[:, i:i + prune_m].pow(2) / d1[i:i + prune_m].pow(2)[None, :]
                mask1.scatter_(1, i + saliency.topk(prune_n, dim=1, largest=False).indices, True)
            w = W1[:, i]
            q = w.clone()
            q[mask1[:, i]] = 0.0
            if bits is not None:
                g = col // group_size
                if col % group_size == 0:  # fit the group's grid on the updated weights
                    scale[:, g], zero[:, g] = quant_params(W1[:, i:i + group_size], bits, symmetric)
                c = quantize_codes(q, scale[:, g], zero[:, g], bits)  # a pruned 0 lands on code = zero: exact 0
                codes[:, col] = c.to(torch.uint8)
                q = (c - zero[:, g]) * scale[:, g]
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W, ((codes, scale, zero) if bits is not None else None)


def sparsegpt_model(model, names: list[str], batches, sparsity: float = 0.5, prune_n: int = 0, prune_m: int = 0,
                    bits: int | None = None, group_size: int = 128, damp: float = 0.01,
                    block_size: int = 128) -> dict[str, float]:
    """Prune (and optionally quantize) the named Linears of ``model`` in place, block by block of
    the model. Returns each layer's relative output error on its calibration inputs through H:
    tr(ΔW H ΔWᵀ) / tr(W H Wᵀ), the objective SparseGPT reduces."""
    from optimizers.quant.calibrate import layer_hessians
    from optimizers.quant.gptq import hessian_error
    from optimizers.quant.modules import QuantLinearInt4, set_module

    errors: dict[str, float] = {}
    for name, lin, H in layer_hessians(model, names, batches):
        pruned, codes = sparsegpt_prune(lin.weight, H, sparsity, prune_n, prune_m, bits, group_size, damp, block_size)
        errors[name] = hessian_error(lin.weight, pruned, H)
        if codes is None:
            with torch.no_grad():
                lin.weight.copy_(pruned.to(lin.weight.dtype))
        else:
            set_module(model, name, QuantLinearInt4.from_codes(*codes, group_size, lin.bias, bits))
    return errors
