"""Storage layouts for quantized weights, shared by techniques and kernels.

int8 per-channel: ``q`` int8 (N, K), ``scale`` (N,) so that ``w = q * scale[:, None]``.
int4 group-wise: ``packed`` uint8 (N, K // 2) with column ``2j`` in the low nibble and
``2j + 1`` in the high nibble (unsigned codes 0..15), ``scale`` and ``zero`` (N, K // group)
so that ``w[:, k] = (code[:, k] - zero[:, k // group]) * scale[:, k // group]``.
Symmetric int4 uses ``zero = 8``. This is the layout of GPTQ/AWQ "pack-quantized" checkpoints
with the group axis last, and what ``kernels.matmul_w4a16`` reads.
"""
from __future__ import annotations

import torch


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: returns (q int8 (N, K), scale float32 (N,))."""
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(w.shape)}")
    amax = w.detach().abs().amax(dim=1).float().clamp(min=1e-8)  # (N,)
    scale = amax / 127.0
    q = torch.clamp(torch.round(w.float() / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def dequantize_int8_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None].float()


def _check_group(k: int, group_size: int) -> None:
    if group_size <= 0 or k % group_size:
        raise ValueError(
            f"group_size={group_size} must divide in_features={k}; try one of "
            f"{[g for g in (32, 64, 128, 256) if k % g == 0] or [k]}"
        )
    if k % 2:
        raise ValueError(f"int4 packing needs an even in_features, got {k}")


def quantize_int4_groupwise(
    w: torch.Tensor, group_size: int = 128, symmetric: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest int4 per group of ``group_size`` input columns.

    Returns (codes uint8 (N, K) in 0..15, scale float32 (N, K//g), zero float32 (N, K//g)).
    """
    n, k = w.shape
    _check_group(k, group_size)
    wg = w.detach().float().reshape(n, k // group_size, group_size)  # (N, G, g)
    if symmetric:
        amax = wg.abs().amax(dim=2).clamp(min=1e-8)
        scale = amax / 7.0
        zero = torch.full_like(scale, 8.0)
    else:
        wmin = wg.amin(dim=2).clamp(max=0.0)
        wmax = wg.amax(dim=2).clamp(min=0.0)
        scale = ((wmax - wmin) / 15.0).clamp(min=1e-8)
        zero = torch.round(-wmin / scale).clamp(0, 15)
    codes = torch.clamp(torch.round(wg / scale[..., None]) + zero[..., None], 0, 15)
    return codes.reshape(n, k).to(torch.uint8), scale, zero


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) uint8 codes 0..15 → (N, K//2) uint8, even column in the low nibble."""
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even number of columns, got {codes.shape[-1]}")
    return pack_bits(codes, 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(N, K//2) uint8 → (N, K) uint8 codes 0..15."""
    return unpack_bits(packed, 4, packed.shape[-1] * 2)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(..., K) integer codes in 0..2^bits − 1 → (..., ceil(K·bits/8)) uint8, code j at bits
    j·bits … j·bits + bits − 1 of the row's little-endian bit stream (so 4-bit codes are
    ``pack_int4``'s layout, even column in the low nibble; 2-bit: four codes a byte, the first
    in the two lowest bits; 1-bit: eight). The last byte of a row is padded with zero bits."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits}: pack_bits packs 1- to 8-bit codes")
    c = codes.to(torch.uint8)
    k = c.shape[-1]
    if 8 % bits == 0:  # whole codes a byte: shift and OR (the int4 fast path)
        per = 8 // bits
        c = torch.nn.functional.pad(c, (0, -k % per)).reshape(*c.shape[:-1], -1, per)  # (..., bytes, per)
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=c.device)
        return (c << shifts).sum(-1, dtype=torch.uint8).contiguous()  # disjoint bits: sum == OR
    weights = 1 << torch.arange(bits, dtype=torch.uint8, device=c.device)
    stream = ((c[..., None] & weights) != 0).reshape(*c.shape[:-1], k * bits)  # (..., K·bits) LSB first
    stream = torch.nn.functional.pad(stream, (0, -(k * bits) % 8)).reshape(*c.shape[:-1], -1, 8)
    return (stream.to(torch.uint8) << torch.arange(8, dtype=torch.uint8, device=c.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: (..., bytes) uint8 → (..., count) uint8 codes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits}: unpack_bits unpacks 1- to 8-bit codes")
    if count * bits > packed.shape[-1] * 8:
        raise ValueError(f"{count} codes of {bits} bits need {-(-count * bits // 8)} bytes; got {packed.shape[-1]}")
    mask = (1 << bits) - 1
    if 8 % bits == 0:
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
        codes = (packed[..., None] >> shifts) & mask  # (..., bytes, 8 / bits)
        return codes.reshape(*packed.shape[:-1], -1)[..., :count]
    stream = (packed[..., None] >> torch.arange(8, dtype=torch.uint8, device=packed.device)) & 1  # (..., bytes, 8)
    stream = stream.reshape(*packed.shape[:-1], -1)[..., : count * bits].reshape(*packed.shape[:-1], count, bits)
    return (stream << torch.arange(bits, dtype=torch.uint8, device=packed.device)).sum(-1, dtype=torch.uint8)


def dequantize_int4_groupwise(
    packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Inverse of pack_int4(quantize_int4_groupwise(...)) → float32 (N, K)."""
    codes = unpack_int4(packed).float()
    n, k = codes.shape
    g = codes.reshape(n, k // group_size, group_size)
    return ((g - zero[..., None].float()) * scale[..., None].float()).reshape(n, k)
