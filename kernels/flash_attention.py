"""Flash attention forward (causal or full, GQA/MQA, queries = the LAST T_q of T_k positions) with an
online softmax. Why: eager writes and reads the (T_q, T_k) scores; tiling keeps them on chip. Bytes:
(2*B*H*T_q*D + 2*B*H_kv*T_k*D)*elem. FLOPs: 4*B*H*D*(visible query-key pairs). Source: Dao et al. 2022
"FlashAttention", Dao 2023 "FlashAttention-2"; Triton tutorial 06-fused-attention.
"""
from __future__ import annotations

import math

import torch

from kernels import _common

HEAD_DIMS = (16, 32, 64, 128)
LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e))


# ---------------------------------------------------------------------------------------------
# (2) Reference
# ---------------------------------------------------------------------------------------------
def causal_mask(t_q: int, t_k: int, device) -> torch.Tensor:
    """(T_q, T_k) bool, True where key j is hidden from query i (queries are the last T_q positions)."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).triu(diagonal=t_k - t_q + 1)


def reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, sm_scale: float | None = None,
    upcast: bool = True,
) -> torch.Tensor:
    """Eager attention; upcast=True computes and returns fp32, False stays in q.dtype."""
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (B, H, T_k, D)
    v = v.repeat_interleave(group, dim=1)  # (B, H, T_k, D)
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, T_q, T_k)
    if causal:
        scores = scores.masked_fill(causal_mask(q.shape[2], k.shape[2], q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, T_q, D)


# ---------------------------------------------------------------------------------------------
# (3) Kernel
# ---------------------------------------------------------------------------------------------
@_common.jit_cache
def _build(interpret: bool):
    triton, tl = _common.load_triton()

    @triton.jit
    def _attn_fwd(
        Q,  # *dtype (B, H, T_q, D)
        K,  # *dtype (B, H_kv, T_k, D)
        V,  # *dtype (B, H_kv, T_k, D)
        O,  # *dtype (B, H, T_q, D) output
        stride_qb, stride_qh, stride_qt, stride_qd,  # Q strides (elements)
        stride_kb, stride_kh, stride_kt, stride_kd,  # K strides
        stride_vb, stride_vh, stride_vt, stride_vd,  # V strides
        stride_ob, stride_oh, stride_ot, stride_od,  # O strides
        H,  # query heads
        GROUP,  # query heads per kv head, H // H_kv
        T_q, T_k,  # query and key lengths; queries are the last T_q positions
        qk_scale,  # sm_scale * log2(e)
        CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ):
        start_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        h_kv = h // GROUP
        q_base = Q + b * stride_qb + h * stride_qh
        k_base = K + b * stride_kb + h_kv * stride_kh
        v_base = V + b * stride_vb + h_kv * stride_vh
        o_base = O + b * stride_ob + h * stride_oh
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
        offs_d = tl.arange(0, HEAD_DIM)  # (D,)
        row_mask = offs_m[:, None] < T_q
        q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd, mask=row_mask, other=0.0)

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        pos_offset = T_k - T_q
        if CAUSAL:
            first_pos = start_m * BLOCK_M + pos_offset  # absolute position of this tile's first query
            hi = tl.minimum(T_k, first_pos + BLOCK_M)  # keys beyond the tile's last query are never visible
            lo_masked = ((first_pos + 1) // BLOCK_N) * BLOCK_N  # keys below are visible to every row
        else:
            hi = T_k
            lo_masked = (T_k // BLOCK_N) * BLOCK_N  # full key blocks need no mask
        offs_n = tl.arange(0, BLOCK_N)  # (BN,)
        # Two sweeps, unrolled at compile time so the mask costs nothing where it is not needed:
        # phase 0 = key blocks visible to every row (no mask); phase 1 = diagonal and tail blocks.
        for phase in tl.static_range(2):
            if phase == 0:
                lo = 0
                hi_phase = lo_masked
            else:
                lo = lo_masked
                hi_phase = hi
            for start_n in range(lo, hi_phase, BLOCK_N):
                cols = start_n + offs_n  # (BN,) key positions
                kt_ptrs = k_base + cols[None, :] * stride_kt + offs_d[:, None] * stride_kd  # (D, BN)
                v_ptrs = v_base + cols[:, None] * stride_vt + offs_d[None, :] * stride_vd  # (BN, D)
                if phase == 0:
                    kt = tl.load(kt_ptrs)
                else:
                    kt = tl.load(kt_ptrs, mask=cols[None, :] < T_k, other=0.0)
                qk = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale  # (BM, BN), log2 units
                if phase == 1:
                    visible = cols[None, :] < T_k
                    if CAUSAL:
                        visible = visible & (cols[None, :] <= offs_m[:, None] + pos_offset)
                    qk = tl.where(visible, qk, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(qk, axis=1))  # finite: key 0 is visible to every row
                p = tl.exp2(qk - m_new[:, None])  # (BM, BN)
                alpha = tl.exp2(m_i - m_new)  # rescales what was accumulated under the old max
                l_i = l_i * alpha + tl.sum(p, axis=1)
                if phase == 0:
                    v = tl.load(v_ptrs)
                else:
                    v = tl.load(v_ptrs, mask=cols[:, None] < T_k, other=0.0)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
                m_i = m_new
        out = acc / l_i[:, None]
        tl.store(
            o_base + offs_m[:, None] * stride_ot + offs_d[None, :] * stride_od, out.to(O.dtype.element_ty),
            mask=row_mask,
        )

    return _attn_fwd


# ---------------------------------------------------------------------------------------------
# (4) Public wrapper
# ---------------------------------------------------------------------------------------------
def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    _common.check_dtype("q", q, _common.FLOAT_DTYPES, _common.ACTIVATION_DTYPES_HELP)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but q has {q.dtype}; cast with `.to(q.dtype)`.")
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H_kv, T_k, D), got shape {tuple(t.shape)}")
    if q.dim() != 4:
        raise ValueError(f"q must be (B, H, T_q, D), got {tuple(q.shape)}; from (B, T, H, D) use .transpose(1, 2)")
    if k.shape != v.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    (b, h, t_q, d), (bk, h_kv, t_k, dk) = q.shape, k.shape
    if bk != b or dk != d:
        raise ValueError(f"q (B={b}, D={d}) and k (B={bk}, D={dk}) must agree on batch and head_dim")
    if h % h_kv:
        raise ValueError(f"query heads H={h} must be a multiple of kv heads H_kv={h_kv} (GQA/MQA)")
    if d not in HEAD_DIMS:
        raise ValueError(f"head_dim D={d} is not supported; use one of {HEAD_DIMS} (pad D up to the next one)")
    if t_k == 0:
        raise ValueError("k and v hold no positions (T_k=0); attention needs at least one key")
    if b * h > 65535:
        raise ValueError(f"B*H={b * h} exceeds CUDA's grid limit of 65535 on axis 1; split the batch")
    if causal and t_q > t_k:
        raise ValueError(
            f"causal attention needs T_q={t_q} <= T_k={t_k}: queries are the last T_q key positions; "
            "pass the whole key/value cache"
        )
    _common.check_same_device(q=q, k=k, v=v)


def _pick_tiles(t_q: int, d: int, dtype: torch.dtype) -> dict:
    """Tiles whose sm_90 build neither spills registers (beyond 8 bytes) nor overflows shared memory, per
    cuobjdump: 16-bit inputs 128x64 (FlashAttention-2's forward tiles); fp32 (exact products, no tensor
    cores) 64x32 for D <= 64, 16x32 for D = 128; decode (T_q <= 16) BLOCK_M=16. Speed is untuned."""
    if dtype == torch.float32:
        block_m = 64 if d <= 64 and t_q > 16 else 16
        return {"BLOCK_M": block_m, "BLOCK_N": 32, "num_warps": 8 if block_m == 64 else 4, "num_stages": 2}
    block_m = 16 if t_q <= 16 else 128
    num_warps = 8 if block_m == 128 and d == 128 else 4
    return {"BLOCK_M": block_m, "BLOCK_N": 64, "num_warps": num_warps, "num_stages": 3}


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    sm_scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Attention of q (B, H, T_q, D) over k, v (B, H_kv, T_k, D) → (B, H, T_q, D) in q.dtype.

    Queries are the last T_q of the T_k positions (decode / chunked prefill when T_q < T_k).
    block_m / block_n: tile sizes (powers of 2, >= 16) to override the defaults.
    """
    _check_inputs(q, k, v, causal)
    _common.check_runtime(q.device)
    _common.check_interpreter_dot(q.dtype)
    (b, h, t_q, d), (h_kv, t_k) = q.shape, k.shape[1:3]
    o = _common.check_out(out, tuple(q.shape), q.dtype, q.device)
    if o.numel() == 0:
        return o
    tiles = _pick_tiles(t_q, d, q.dtype)
    for name, value in (("BLOCK_M", block_m), ("BLOCK_N", block_n)):
        if value is not None:
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name.lower()}={value} must be a power of two >= 16, e.g. 64")
            tiles[name] = value
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    grid = (_common.cdiv(t_q, tiles["BLOCK_M"]), b * h)
    _build()[grid](
        q, k, v, o, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        h, h // h_kv, t_q, t_k, scale * LOG2E,
        CAUSAL=causal, HEAD_DIM=d, DOT_PRECISION=_common.dot_precision(q.dtype), **tiles,
    )
    return o


# ---------------------------------------------------------------------------------------------
# (5) Benchmark
# ---------------------------------------------------------------------------------------------
def visible_pairs(t_q: int, t_k: int, causal: bool) -> int:
    """Query-key pairs attended: T_q*T_k, or under the causal mask sum_i (i + T_k - T_q + 1)."""
    if not causal:
        return t_q * t_k
    return t_q * (t_k - t_q + 1) + t_q * (t_q - 1) // 2


def bytes_moved(b: int, h: int, h_kv: int, t_q: int, t_k: int, d: int, dtype: torch.dtype) -> int:
    return (2 * b * h * t_q * d + 2 * b * h_kv * t_k * d) * _common.element_size(dtype)  # q, o, k, v


def flops(b: int, h: int, t_q: int, t_k: int, d: int, causal: bool) -> int:
    return 4 * b * h * d * visible_pairs(t_q, t_k, causal)  # two matmuls of 2*D flops per pair


def example_inputs(b: int, h: int, h_kv: int, t_q: int, t_k: int, d: int, dtype: torch.dtype, device, seed: int = 0):
    q = _common.random_tensor((b, h, t_q, d), dtype, device, seed)  # (B, H, T_q, D)
    k = _common.random_tensor((b, h_kv, t_k, d), dtype, device, seed + 1)  # (B, H_kv, T_k, D)
    v = _common.random_tensor((b, h_kv, t_k, d), dtype, device, seed + 2)  # (B, H_kv, T_k, D)
    return q, k, v


def bench(
    b: int = 1, h: int = 32, h_kv: int = 8, t: int = 4096, d: int = 128, causal: bool = True,
    dtype: torch.dtype = torch.bfloat16, device="cuda", t_q: int | None = None,
) -> dict:
    """Times the full problem; errors are measured on batch 0 and the first kv head's query heads
    (the fp32 eager reference of the full problem can need tens of GB)."""
    device = torch.device(device)
    t_q = t if t_q is None else t_q
    q, k, v = example_inputs(b, h, h_kv, t_q, t, d, dtype, device)
    out = flash_attention(q, k, v, causal)
    ms, timing = _common.time_ms(lambda: flash_attention(q, k, v, causal, out=out), device)
    g = h // h_kv
    qs, ks, vs = q[:1, :g], k[:1, :1], v[:1, :1]  # (1, g, T_q, D), (1, 1, T_k, D)
    return _common.bench_row(
        "flash_attention", (b, h, h_kv, t_q, t, d, "causal" if causal else "full"), dtype, device, ms, timing,
        bytes_moved(b, h, h_kv, t_q, t, d, dtype), flops(b, h, t_q, t, d, causal),
        out[:1, :g], reference(qs, ks, vs, causal), reference(qs, ks, vs, causal, upcast=False),
    )
