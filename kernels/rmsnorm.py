"""Fused RMSNorm forward over the last dim: y = x / sqrt(mean(x^2) + eps) * weight, fp32 inside.
Why: eager runs pow, mean, rsqrt, mul, mul as separate passes; fused, x is read once and y written once.
Bytes: 2*rows*n*elem + n*elem(w). FLOPs: 4*rows*n. Source: Zhang & Sennrich 2019, "Root Mean Square
Layer Normalization"; layout after flash-attention's ops/triton/layer_norm.py.
"""
from __future__ import annotations

import torch

from kernels import _common

MAX_BLOCK = 8192  # columns one program holds at once; longer rows loop over blocks


# ---------------------------------------------------------------------------------------------
# (2) Reference
# ---------------------------------------------------------------------------------------------
def reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, upcast: bool = True) -> torch.Tensor:
    """Eager RMSNorm. upcast=True computes and returns fp32 (the accuracy reference);
    upcast=False computes in x.dtype (the "eager at the same dtype" the kernel is bounded by)."""
    xc = x.float() if upcast else x
    wc = weight.float() if upcast else weight.to(x.dtype)
    rstd = torch.rsqrt(xc.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    return xc * rstd * wc


# ---------------------------------------------------------------------------------------------
# (3) Kernel
# ---------------------------------------------------------------------------------------------
@_common.jit_cache
def _build(interpret: bool):
    triton, tl = _common.load_triton()

    @triton.jit
    def _rmsnorm_fwd(
        X,  # *x.dtype (rows, n), unit column stride
        W,  # *w.dtype (n,) contiguous
        Y,  # *x.dtype (rows, n), unit column stride
        stride_x,  # elements between rows of X
        stride_y,  # elements between rows of Y
        n,  # columns (the normalized dim)
        eps,  # added to mean(x^2)
        BLOCK: tl.constexpr,  # columns per step, power of 2
    ):
        row = tl.program_id(0).to(tl.int64)  # int64: rows * stride may pass 2**31
        x_row = X + row * stride_x
        y_row = Y + row * stride_y
        sq = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, n, BLOCK):  # pass 1: sum of squares
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(x_row + cols, mask=cols < n, other=0.0).to(tl.float32)
            sq += x * x
        rstd = 1.0 / tl.sqrt(tl.sum(sq, axis=0) / n + eps)
        for start in range(0, n, BLOCK):  # pass 2: scale (a re-read from L1/L2 when n <= BLOCK)
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n
            x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_row + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)

    return _rmsnorm_fwd


# ---------------------------------------------------------------------------------------------
# (4) Public wrapper
# ---------------------------------------------------------------------------------------------
def _check_inputs(x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    _common.check_dtype("x", x, _common.FLOAT_DTYPES, _common.ACTIVATION_DTYPES_HELP)
    _common.check_dtype("weight", weight, _common.FLOAT_DTYPES, _common.ACTIVATION_DTYPES_HELP)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dim to normalize, got shape {tuple(x.shape)}")
    if tuple(weight.shape) != (x.shape[-1],):
        raise ValueError(f"weight must have shape ({x.shape[-1]},) = x.shape[-1:], got {tuple(weight.shape)}")
    if not eps > 0:
        raise ValueError(f"eps={eps} must be > 0, e.g. 1e-6")
    _common.check_same_device(x=x, weight=weight)


def rmsnorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    *,
    out: torch.Tensor | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """RMSNorm of x (..., n) over its last dim, times weight (n,); returns x.dtype, shape of x.

    block_size: columns per step (power of 2); default is the whole row up to MAX_BLOCK.
    """
    _check_inputs(x, weight, eps)
    _common.check_runtime(x.device)
    n = x.shape[-1]
    y = _common.check_out(out, tuple(x.shape), x.dtype, x.device)
    if x.numel() == 0:
        return y
    x2 = _common.rows_view(x)  # (rows, n)
    y2 = y.view(-1, n)  # (rows, n)
    block = _common.pick_row_block(n, block_size, MAX_BLOCK)
    _build()[(x2.shape[0],)](
        x2, weight.contiguous(), y2, x2.stride(0), y2.stride(0), n, eps,
        BLOCK=block, num_warps=_common.row_num_warps(block),
    )
    return y


# ---------------------------------------------------------------------------------------------
# (5) Benchmark
# ---------------------------------------------------------------------------------------------
def bytes_moved(rows: int, n: int, dtype: torch.dtype) -> int:
    return 2 * rows * n * _common.element_size(dtype) + n * _common.element_size(dtype)


def flops(rows: int, n: int) -> int:
    return 4 * rows * n  # square, add, times rstd, times weight


def example_inputs(rows: int, n: int, dtype: torch.dtype, device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = _common.random_tensor((rows, n), dtype, device, seed)  # (rows, n)
    weight = 1.0 + 0.1 * _common.random_tensor((n,), dtype, device, seed + 1)  # (n,), around 1 like a trained norm
    return x, weight


def bench(rows: int = 8192, n: int = 8192, dtype: torch.dtype = torch.bfloat16, device="cuda") -> dict:
    device = torch.device(device)
    x, weight = example_inputs(rows, n, dtype, device)
    out = rmsnorm(x, weight)
    ms, timing = _common.time_ms(lambda: rmsnorm(x, weight, out=out), device)
    return _common.bench_row(
        "rmsnorm", (rows, n), dtype, device, ms, timing, bytes_moved(rows, n, dtype), flops(rows, n),
        out, reference(x, weight), reference(x, weight, upcast=False),
    )
