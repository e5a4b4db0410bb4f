"""Measured roofline ceilings (device copy GB/s, matmul TFLOP/s) and where a bench row sits under them.
Why: % of a datasheet peak flatters; ceilings measured on the same device in the same run do not, and
arithmetic intensity (FLOPs / byte) against the ridge point says which ceiling binds.
Source: Williams, Waterman & Patterson 2009, "Roofline: an insightful visual performance model".
"""
from __future__ import annotations

import torch

from kernels import _common

# Sizes: (copy bytes, matmul side). CPU sizes keep tests fast; CUDA sizes swamp caches and launch cost.
SIZES = {"cuda": (1 << 30, 8192), "cpu": (32 << 20, 512)}


def _copy_gb_per_s(nbytes: int, device: torch.device) -> float:
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms, _ = _common.time_ms(lambda: dst.copy_(src), device, triton_kernel=False)
    return 2 * src.numel() * 4 / (ms / 1e3) / 1e9  # bytes read + bytes written


def _matmul_tflop_per_s(n: int, dtype: torch.dtype, device: torch.device) -> float:
    a = _common.random_tensor((n, n), dtype, device, seed=0)
    b = _common.random_tensor((n, n), dtype, device, seed=1)
    ms, _ = _common.time_ms(lambda: a @ b, device, triton_kernel=False)
    return 2 * n**3 / (ms / 1e3) / 1e12


def measure_ceilings(device="cuda") -> dict:
    """{"copy_gb_per_s", "matmul_tflop_per_s": {"bf16", "fp32"}, "device", "timing"} measured now.

    fp32 matmul runs with torch's current TF32 setting (off by default), like the kernels' fp32 path.
    """
    device = torch.device(device)
    copy_bytes, side = SIZES["cuda" if device.type == "cuda" else "cpu"]
    return {
        "copy_gb_per_s": _copy_gb_per_s(copy_bytes, device),
        "matmul_tflop_per_s": {
            "bf16": _matmul_tflop_per_s(side, torch.bfloat16, device),
            "fp32": _matmul_tflop_per_s(side, torch.float32, device),
        },
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "timing": "cuda_do_bench_median" if device.type == "cuda" else "cpu_wall_median",
    }


def percent_of_roofline(row: dict, ceilings: dict) -> dict:
    """Classify a bench row as memory- or compute-bound and give % of the ceiling that binds it.

    Intensity = flops / bytes; ridge = peak FLOP/s / copy bandwidth. Below the ridge the kernel is
    judged by GB/s against the copy bandwidth, above it by FLOP/s against the matmul peak of its
    dtype (fp16 and bf16 share the bf16 tensor-core peak).
    """
    peak = ceilings["matmul_tflop_per_s"]["fp32" if row["dtype"] == "float32" else "bf16"] * 1e12  # FLOP/s
    bandwidth = ceilings["copy_gb_per_s"] * 1e9  # B/s
    intensity = row["flops"] / row["bytes"]
    ridge = peak / bandwidth
    memory_bound = intensity < ridge
    if memory_bound:
        pct = 100 * row["gb_per_s"] * 1e9 / bandwidth
    else:
        pct = 100 * row["tflop_per_s"] * 1e12 / peak
    return {
        "bound": "memory" if memory_bound else "compute",
        "intensity_flop_per_byte": intensity,
        "ridge_flop_per_byte": ridge,
        "pct_of_roofline": pct,
    }
