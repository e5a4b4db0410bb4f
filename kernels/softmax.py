"""Row-wise softmax over the last dim, fp32 inside, any row length: a row that fits one block is read
once; a longer row is swept with an online max/sum, then normalized. Why: softmax is memory-bound.
Bytes: 2*rows*n*elem (3* when a row loops). FLOPs: 5*rows*n. Source: Milakov & Gimelshein 2018,
"Online normalizer calculation for softmax"; Triton tutorial 02-fused-softmax.
"""
from __future__ import annotations

import torch

from kernels import _common

MAX_BLOCK = 8192  # columns one program holds at once; longer rows take the online path


# ---------------------------------------------------------------------------------------------
# (2) Reference
# ---------------------------------------------------------------------------------------------
def reference(x: torch.Tensor, upcast: bool = True) -> torch.Tensor:
    """Eager softmax over the last dim; upcast=True computes and returns fp32, False stays in x.dtype."""
    return torch.softmax(x.float() if upcast else x, dim=-1)


# ---------------------------------------------------------------------------------------------
# (3) Kernel
# ---------------------------------------------------------------------------------------------
@_common.jit_cache
def _build(interpret: bool):
    triton, tl = _common.load_triton()

    @triton.jit
    def _softmax_fwd(
        X,  # *x.dtype (rows, n), unit column stride
        Y,  # *x.dtype (rows, n), unit column stride
        stride_x,  # elements between rows of X
        stride_y,  # elements between rows of Y
        n,  # columns
        BLOCK: tl.constexpr,  # columns per step, power of 2
        ONE_BLOCK: tl.constexpr,  # n <= BLOCK: keep the row in registers, read it once
    ):
        row = tl.program_id(0).to(tl.int64)
        x_row = X + row * stride_x
        y_row = Y + row * stride_y
        if ONE_BLOCK:
            cols = tl.arange(0, BLOCK)
            mask = cols < n
            x = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
            p = tl.exp(x - tl.max(x, axis=0))
            tl.store(y_row + cols, (p / tl.sum(p, axis=0)).to(Y.dtype.element_ty), mask=mask)
        else:
            m_i = tl.full([BLOCK], float("-inf"), tl.float32)  # running max per lane
            d_i = tl.zeros([BLOCK], dtype=tl.float32)  # running sum of exp(x - m_i) per lane
            for start in range(0, n, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                x = tl.load(x_row + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
                m_new = tl.maximum(m_i, x)
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # avoid -inf - -inf = nan
                d_i = d_i * tl.exp(m_i - m_safe) + tl.exp(x - m_safe)
                m_i = m_new
            m = tl.max(m_i, axis=0)
            inv_d = 1.0 / tl.sum(d_i * tl.exp(m_i - m), axis=0)
            for start in range(0, n, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n
                x = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
                tl.store(y_row + cols, (tl.exp(x - m) * inv_d).to(Y.dtype.element_ty), mask=mask)

    return _softmax_fwd


# ---------------------------------------------------------------------------------------------
# (4) Public wrapper
# ---------------------------------------------------------------------------------------------
def _check_inputs(x: torch.Tensor) -> None:
    _common.check_dtype("x", x, _common.FLOAT_DTYPES, _common.ACTIVATION_DTYPES_HELP)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dim, got shape {tuple(x.shape)}")


def softmax(x: torch.Tensor, *, out: torch.Tensor | None = None, block_size: int | None = None) -> torch.Tensor:
    """Softmax of x (..., n) over its last dim; returns x.dtype, shape of x.

    block_size: columns per step (power of 2); rows longer than it use the online two-sweep path.
    """
    _check_inputs(x)
    _common.check_runtime(x.device)
    n = x.shape[-1]
    y = _common.check_out(out, tuple(x.shape), x.dtype, x.device)
    if x.numel() == 0:
        return y
    x2 = _common.rows_view(x)  # (rows, n)
    y2 = y.view(-1, n)  # (rows, n)
    block = _common.pick_row_block(n, block_size, MAX_BLOCK)
    _build()[(x2.shape[0],)](
        x2, y2, x2.stride(0), y2.stride(0), n,
        BLOCK=block, ONE_BLOCK=n <= block, num_warps=_common.row_num_warps(block),
    )
    return y


# ---------------------------------------------------------------------------------------------
# (5) Benchmark
# ---------------------------------------------------------------------------------------------
def bytes_moved(rows: int, n: int, dtype: torch.dtype) -> int:
    return 2 * rows * n * _common.element_size(dtype)  # the minimum: one read, one write


def flops(rows: int, n: int) -> int:
    return 5 * rows * n  # max, subtract, exp, sum, scale


def example_inputs(rows: int, n: int, dtype: torch.dtype, device, seed: int = 0) -> torch.Tensor:
    return _common.random_tensor((rows, n), dtype, device, seed, scale=3.0)  # (rows, n), logits-like spread


def bench(rows: int = 8192, n: int = 8192, dtype: torch.dtype = torch.bfloat16, device="cuda") -> dict:
    device = torch.device(device)
    x = example_inputs(rows, n, dtype, device)
    out = softmax(x)
    ms, timing = _common.time_ms(lambda: softmax(x, out=out), device)
    return _common.bench_row(
        "softmax", (rows, n), dtype, device, ms, timing, bytes_moved(rows, n, dtype), flops(rows, n),
        out, reference(x), reference(x, upcast=False),
    )
