"""Weight-only int8 matmul y = x @ (q * scale[:, None]).T; x (M, K) fp32/fp16/bf16, q int8 (N, K).
Why: decode is bound by weight bytes; int8 halves bf16's. q is converted to x.dtype in the K loop (exact
for |q| <= 127), the per-channel scale applied in the epilogue. Bytes: M*K*e + N*K + 4*N + M*N*e.
FLOPs: 2*M*N*K. Source: gpt-fast quantize.py (WeightOnlyInt8Linear); Dettmers et al. 2022, LLM.int8().
"""
from __future__ import annotations

import torch

from kernels import _common
from quant.packing import dequantize_int8_per_channel, quantize_int8_per_channel


# ---------------------------------------------------------------------------------------------
# (2) Reference
# ---------------------------------------------------------------------------------------------
def reference(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, upcast: bool = True) -> torch.Tensor:
    """Eager dequantize-then-matmul; upcast=True computes and returns fp32, False stays in x.dtype."""
    w = dequantize_int8_per_channel(qweight, scale)  # (N, K) fp32
    if upcast:
        return x.float() @ w.T
    return x @ w.to(x.dtype).T  # (M, N)


# ---------------------------------------------------------------------------------------------
# (3) Kernel
# ---------------------------------------------------------------------------------------------
@_common.jit_cache
def _build(interpret: bool):
    triton, tl = _common.load_triton()

    @triton.jit
    def _w8a16_kernel(
        X,  # *x.dtype (M, K) activations
        Q,  # *int8 (N, K) weight codes
        S,  # *float (N,) per-output-channel scale
        Y,  # *out (SPLIT, M, N): x.dtype output when SPLIT == 1, fp32 partial sums otherwise
        M, N, K,  # problem size
        K_PER_SPLIT,  # K columns per program along grid axis 2; a multiple of BLOCK_K
        stride_xm, stride_xk,  # X strides (elements)
        stride_qn, stride_qk,  # Q strides
        stride_ys, stride_ym, stride_yn,  # Y strides
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 activations
    ):
        pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
        k_start = pid_k * K_PER_SPLIT
        k_end = tl.minimum(k_start + K_PER_SPLIT, K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)  # (BK,)
            x = tl.load(
                X + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0,
            )  # (BM, BK)
            q = tl.load(
                Q + offs_n[None, :] * stride_qn + offs_k[:, None] * stride_qk,
                mask=(offs_n[None, :] < N) & (offs_k[:, None] < K), other=0,
            )  # (BK, BN) int8
            w = q.to(tl.float32).to(X.dtype.element_ty)  # dequantize: codes are exact in fp16/bf16
            acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        s = tl.load(S + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)  # (BN,)
        acc = acc * s[None, :]
        tl.store(
            Y + pid_k * stride_ys + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
            acc.to(Y.dtype.element_ty),
            mask=(offs_m[:, None] < M) & (offs_n[None, :] < N),
        )

    return _w8a16_kernel


# ---------------------------------------------------------------------------------------------
# (4) Public wrapper
# ---------------------------------------------------------------------------------------------
def _check_inputs(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> None:
    _common.check_dtype("x", x, _common.FLOAT_DTYPES, _common.ACTIVATION_DTYPES_HELP)
    _common.check_dtype("qweight", qweight, (torch.int8,), "torch.int8 codes from quantize_int8_per_channel")
    _common.check_dtype("scale", scale, _common.FLOAT_DTYPES, "a float tensor")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (M, K), got {tuple(x.shape)}; flatten leading dims with x.reshape(-1, K)")
    if qweight.dim() != 2 or qweight.shape[1] != x.shape[1]:
        raise ValueError(f"qweight must be (N, K={x.shape[1]}) like a Linear weight, got {tuple(qweight.shape)}")
    if tuple(scale.shape) != (qweight.shape[0],):
        raise ValueError(f"scale must be ({qweight.shape[0]},), one per output channel, got {tuple(scale.shape)}")
    _common.check_same_device(x=x, qweight=qweight, scale=scale)
    _common.check_int32_indexable(x=x, qweight=qweight, scale=scale)


def matmul_w8a16(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    split_k: int | None = None,
) -> torch.Tensor:
    """x (M, K) @ dequant(qweight (N, K) int8, scale (N,)).T → (M, N) in x.dtype.

    split_k: programs along K (partials summed in fp32); default fills the GPU for small M.
    """
    _check_inputs(x, qweight, scale)
    _common.check_runtime(x.device)
    _common.check_interpreter_dot(x.dtype)
    (m, k), n = x.shape, qweight.shape[0]
    y = _common.check_out(out, (m, n), x.dtype, x.device)
    if y.numel() == 0 or k == 0:
        return y.zero_()  # an empty sum is 0
    tiles = _common.matmul_tiles(m, x.dtype)
    grid_mn = (_common.cdiv(m, tiles["BLOCK_M"]), _common.cdiv(n, tiles["BLOCK_N"]))
    splits, k_per_split = _common.split_k_plan(grid_mn[0] * grid_mn[1], k, tiles["BLOCK_K"], x.device, split_k)
    target = _common.split_k_target(y, splits)  # (S, M, N)
    _build()[(*grid_mn, splits)](
        x, qweight, scale.contiguous(), target, m, n, k, k_per_split,
        x.stride(0), x.stride(1), qweight.stride(0), qweight.stride(1), *target.stride(),
        DOT_PRECISION=_common.dot_precision(x.dtype), **tiles,
    )
    return _common.split_k_finish(target, y)


# ---------------------------------------------------------------------------------------------
# (5) Benchmark
# ---------------------------------------------------------------------------------------------
def bytes_moved(m: int, n: int, k: int, dtype: torch.dtype) -> int:
    e = _common.element_size(dtype)
    return m * k * e + n * k + 4 * n + m * n * e


def flops(m: int, n: int, k: int) -> int:
    return 2 * m * n * k


def example_inputs(m: int, n: int, k: int, dtype: torch.dtype, device, seed: int = 0):
    """x (M, K) in dtype; (qweight int8 (N, K), scale fp32 (N,)) quantized from a random weight."""
    x = _common.random_tensor((m, k), dtype, device, seed)
    w = _common.random_tensor((n, k), torch.float32, device, seed + 1, scale=k**-0.5)
    qweight, scale = quantize_int8_per_channel(w)
    return x, qweight, scale


def bench(m: int = 1, n: int = 4096, k: int = 4096, dtype: torch.dtype = torch.bfloat16, device="cuda") -> dict:
    device = torch.device(device)
    x, qweight, scale = example_inputs(m, n, k, dtype, device)
    out = matmul_w8a16(x, qweight, scale)
    ms, timing = _common.time_ms(lambda: matmul_w8a16(x, qweight, scale), device)
    return _common.bench_row(
        "matmul_w8a16", (m, n, k), dtype, device, ms, timing, bytes_moved(m, n, k, dtype), flops(m, n, k),
        out, reference(x, qweight, scale), reference(x, qweight, scale, upcast=False),
    )
