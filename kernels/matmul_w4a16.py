"""Weight-only int4 group-wise matmul y = x @ W.T, W[n, k] = (code - zero[n, k//g]) * scale[n, k//g].
Why: decode (M = 1..16) is bound by weight bytes; int4 reads a quarter of bf16; codes are unpacked and
dequantized in the K loop. Bytes: M*K*e + N*K/2 + 8*N*K/g + M*N*e. FLOPs: 2*M*N*K. Layout:
optimizers/quant/packing.py. Source: Frantar et al. 2022 "GPTQ"; Lin et al. 2023 "AWQ"; gpt-fast int4.
"""
from __future__ import annotations

import torch

from kernels import _common
from quant.packing import dequantize_int4_groupwise, pack_int4, quantize_int4_groupwise

K_TILES = (128, 64, 32, 16)  # BLOCK_K candidates: the largest dividing group_size within the tile cap


# ---------------------------------------------------------------------------------------------
# (2) Reference
# ---------------------------------------------------------------------------------------------
def reference(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int, upcast: bool = True
) -> torch.Tensor:
    """Eager unpack-dequantize-matmul; upcast=True computes and returns fp32, False stays in x.dtype."""
    w = dequantize_int4_groupwise(packed, scale, zero, group_size)  # (N, K) fp32
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
    def _w4a16_kernel(
        X,  # *x.dtype (M, K) activations
        P,  # *uint8 (N, K // 2) codes: column 2j in the low nibble, 2j + 1 in the high nibble
        S,  # *float (N, K // GROUP) scale per group
        Z,  # *float (N, K // GROUP) zero point per group, in code units
        Y,  # *out (SPLIT, M, N): x.dtype output when SPLIT == 1, fp32 partial sums otherwise
        M, N, K,  # problem size (K in unpacked columns)
        K_PER_SPLIT,  # K columns per program along grid axis 2; a multiple of BLOCK_K
        stride_xm, stride_xk,  # X strides (elements)
        stride_pn, stride_pk,  # P strides (bytes)
        stride_sn, stride_sg,  # S strides
        stride_zn, stride_zg,  # Z strides
        stride_ys, stride_ym, stride_yn,  # Y strides
        GROUP: tl.constexpr,  # K columns sharing one scale/zero
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,  # divides GROUP, so one K tile lies in one group and K has no tail
        DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 activations
    ):
        pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
        mask_m = offs_m < M
        mask_n = offs_n < N
        k_start = pid_k * K_PER_SPLIT
        k_end = tl.minimum(k_start + K_PER_SPLIT, K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)  # (BK,)
            x = tl.load(
                X + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=mask_m[:, None], other=0.0
            )  # (BM, BK)
            byte = tl.load(
                P + offs_n[None, :] * stride_pn + (offs_k[:, None] // 2) * stride_pk, mask=mask_n[None, :], other=0
            )  # (BK, BN) uint8; each byte is fetched for both of its columns (the second hit is in L1)
            code = (byte >> ((offs_k[:, None] % 2) * 4)) & 0xF  # (BK, BN) 0..15
            g = k0 // GROUP
            s = tl.load(S + offs_n * stride_sn + g * stride_sg, mask=mask_n, other=0.0).to(tl.float32)  # (BN,)
            z = tl.load(Z + offs_n * stride_zn + g * stride_zg, mask=mask_n, other=0.0).to(tl.float32)  # (BN,)
            w = ((code.to(tl.float32) - z[None, :]) * s[None, :]).to(X.dtype.element_ty)  # (BK, BN)
            acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        tl.store(
            Y + pid_k * stride_ys + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
            acc.to(Y.dtype.element_ty),
            mask=mask_m[:, None] & mask_n[None, :],
        )

    return _w4a16_kernel


# ---------------------------------------------------------------------------------------------
# (4) Public wrapper
# ---------------------------------------------------------------------------------------------
def _check_inputs(x, packed, scale, zero, group_size: int) -> None:
    _common.check_dtype("x", x, _common.FLOAT_DTYPES, _common.ACTIVATION_DTYPES_HELP)
    _common.check_dtype("packed", packed, (torch.uint8,), "torch.uint8 from quant.packing.pack_int4")
    _common.check_dtype("scale", scale, _common.FLOAT_DTYPES, "a float tensor")
    _common.check_dtype("zero", zero, _common.FLOAT_DTYPES, "a float tensor")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (M, K), got {tuple(x.shape)}; flatten leading dims with x.reshape(-1, K)")
    k = x.shape[1]
    if packed.dim() != 2 or 2 * packed.shape[1] != k:
        raise ValueError(f"packed must be (N, K//2) = (N, {k // 2}) for x with K={k}, got {tuple(packed.shape)}")
    if group_size <= 0 or k % group_size or group_size % 16:
        raise ValueError(
            f"group_size={group_size} must be a multiple of 16 that divides K={k}; try one of "
            f"{[g for g in (32, 64, 128, 256) if k % g == 0] or 'a K that is a multiple of 32'}"
        )
    groups = (packed.shape[0], k // group_size)
    for name, t in (("scale", scale), ("zero", zero)):
        if tuple(t.shape) != groups:
            raise ValueError(f"{name} must be (N, K // group_size) = {groups}, got {tuple(t.shape)}")
    _common.check_same_device(x=x, packed=packed, scale=scale, zero=zero)
    _common.check_int32_indexable(x=x, packed=packed, scale=scale, zero=zero)


def matmul_w4a16(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    *,
    out: torch.Tensor | None = None,
    split_k: int | None = None,
) -> torch.Tensor:
    """x (M, K) @ dequant(packed (N, K//2) uint8, scale/zero (N, K//g)).T → (M, N) in x.dtype.

    split_k: programs along K (partials summed in fp32); default fills the GPU for small M.
    """
    _check_inputs(x, packed, scale, zero, group_size)
    _common.check_runtime(x.device)
    _common.check_interpreter_dot(x.dtype)
    (m, k), n = x.shape, packed.shape[0]
    y = _common.check_out(out, (m, n), x.dtype, x.device)
    if y.numel() == 0 or k == 0:
        return y.zero_()  # an empty sum is 0
    tiles = _common.matmul_tiles(m, x.dtype)
    tiles["BLOCK_K"] = next(b for b in K_TILES if group_size % b == 0 and b <= tiles["BLOCK_K"])  # 16 always fits
    grid_mn = (_common.cdiv(m, tiles["BLOCK_M"]), _common.cdiv(n, tiles["BLOCK_N"]))
    splits, k_per_split = _common.split_k_plan(grid_mn[0] * grid_mn[1], k, tiles["BLOCK_K"], x.device, split_k)
    target = _common.split_k_target(y, splits)  # (S, M, N)
    _build()[(*grid_mn, splits)](
        x, packed, scale, zero, target, m, n, k, k_per_split,
        x.stride(0), x.stride(1), packed.stride(0), packed.stride(1),
        scale.stride(0), scale.stride(1), zero.stride(0), zero.stride(1), *target.stride(),
        GROUP=group_size, DOT_PRECISION=_common.dot_precision(x.dtype), **tiles,
    )
    return _common.split_k_finish(target, y)


# ---------------------------------------------------------------------------------------------
# (5) Benchmark
# ---------------------------------------------------------------------------------------------
def bytes_moved(m: int, n: int, k: int, group_size: int, dtype: torch.dtype) -> int:
    e = _common.element_size(dtype)
    return m * k * e + n * k // 2 + 2 * 4 * n * (k // group_size) + m * n * e


def flops(m: int, n: int, k: int) -> int:
    return 2 * m * n * k


def example_inputs(m: int, n: int, k: int, group_size: int, dtype: torch.dtype, device, seed: int = 0):
    """x (M, K) in dtype; (packed uint8 (N, K//2), scale, zero fp32 (N, K//g)) from a random weight."""
    x = _common.random_tensor((m, k), dtype, device, seed)
    w = _common.random_tensor((n, k), torch.float32, device, seed + 1, scale=k**-0.5)
    codes, scale, zero = quantize_int4_groupwise(w, group_size)
    return x, pack_int4(codes), scale, zero


def bench(
    m: int = 1, n: int = 4096, k: int = 4096, group_size: int = 128, dtype: torch.dtype = torch.bfloat16, device="cuda"
) -> dict:
    device = torch.device(device)
    x, packed, scale, zero = example_inputs(m, n, k, group_size, dtype, device)
    out = matmul_w4a16(x, packed, scale, zero, group_size)
    ms, timing = _common.time_ms(lambda: matmul_w4a16(x, packed, scale, zero, group_size), device)
    return _common.bench_row(
        "matmul_w4a16", (m, n, k, group_size), dtype, device, ms, timing,
        bytes_moved(m, n, k, group_size, dtype), flops(m, n, k), out,
        reference(x, packed, scale, zero, group_size), reference(x, packed, scale, zero, group_size, upcast=False),
    )
