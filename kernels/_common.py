"""Shared plumbing for the Triton kernels: lazy import, device rules, timing, error metrics.

Every kernel module imports this and nothing from Triton at import time, so `import kernels.*`
works on a laptop without Triton or a GPU (STYLE.md rule 10). One piece of code per idea: the
bench row, the error bound and the timer live here and nowhere else.
"""
from __future__ import annotations

import functools
import importlib
import os
import statistics
import time
from typing import Callable

import torch

from quant.errors import rel_error

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ACTIVATION_DTYPES_HELP = "torch.float32, torch.float16 or torch.bfloat16"


# ---------------------------------------------------------------------------------------------
# Lazy Triton import and runtime checks
# ---------------------------------------------------------------------------------------------
def load_triton():
    """Return the (triton, triton.language) modules, or raise a RuntimeError saying how to get them.

    Every wrapper calls it on every call (cheap once imported), so a missing Triton is reported
    before anything else; tests simulate that by making the import below fail.
    """
    try:
        triton = importlib.import_module("triton")
        tl = importlib.import_module("triton.language")
    except ImportError as exc:
        raise RuntimeError(
            "Triton is not installed: the kernels in `kernels/` need it. Install it with "
            "`pip install triton` (Linux), or use each module's `reference()` instead."
        ) from exc
    return triton, tl


def interpreter_active() -> bool:
    """True when TRITON_INTERPRET=1, i.e. Triton runs kernels in numpy on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_runtime(device: torch.device) -> None:
    """Raise a clear RuntimeError if the kernels cannot run on `device` (no Triton, no GPU)."""
    load_triton()
    if device.type == "cuda" or (device.type == "cpu" and interpreter_active()):
        return
    raise RuntimeError(
        f"no GPU for the Triton kernels: tensors are on '{device}'. Move them to a CUDA device, "
        "or set TRITON_INTERPRET=1 before the first kernel call to run them on CPU in Triton's "
        "interpreter (slow, for correctness only)."
    )


def check_interpreter_dot(dtype: torch.dtype) -> None:
    """Triton 3.7's interpreter multiplies bf16 `tl.dot` operands as raw uint16 bits (wrong results),
    so kernels using tl.dot refuse bf16 under TRITON_INTERPRET=1 instead of returning garbage."""
    if dtype == torch.bfloat16 and interpreter_active():
        raise RuntimeError(
            "bf16 matmul kernels give wrong results in Triton's CPU interpreter (tl.dot reads bf16 as "
            "integers); use float16 or float32 under TRITON_INTERPRET=1, bf16 on a CUDA GPU."
        )


def jit_cache(build: Callable):
    """Cache a kernel builder per interpreter mode, so `TRITON_INTERPRET` flips are honoured.

    `build(interpret: bool)` returns the jitted kernel(s); call the wrapped function without
    arguments: it passes the current mode.
    """
    cached = functools.lru_cache(maxsize=2)(build)

    @functools.wraps(build)
    def get():
        return cached(interpreter_active())

    get.cache_clear = cached.cache_clear
    return get


# ---------------------------------------------------------------------------------------------
# Input validation, shared by every public wrapper
# ---------------------------------------------------------------------------------------------
def check_dtype(name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...], hint: str) -> None:
    if t.dtype not in allowed:
        raise ValueError(f"{name} has dtype {t.dtype}; expected {hint}. Convert it with `{name}.to(...)`.")


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all inputs must be on one device, got {listing}; move them with `.to(device)`.")
    return first


def check_int32_indexable(**tensors: torch.Tensor) -> None:
    """The matmul kernels index a matrix with int32 offsets: each operand must hold < 2**31 elements."""
    for name, t in tensors.items():
        if t.numel() >= 2**31:
            raise ValueError(f"{name} has {t.numel():.3g} elements, past int32 offsets (2**31); split it along N.")


def check_out(
    out: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Return `out` after checking it, or a fresh `torch.empty` of the right shape/dtype/device."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(
            f"out must be {tuple(shape)} {dtype} on {device}, got {tuple(out.shape)} {out.dtype} on "
            f"{out.device}; pass out=None to allocate it."
        )
    if not out.is_contiguous():
        raise ValueError("out must be contiguous; pass out=None or `torch.empty(...)` of the right shape.")
    return out


# ---------------------------------------------------------------------------------------------
# Launch helpers
# ---------------------------------------------------------------------------------------------
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors on a CUDA device; CPU cores otherwise (used to size grids)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return os.cpu_count() or 1


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs use exact fp32 products ("ieee"), not TF32, so they match eager fp32 matmul."""
    return "ieee" if dtype == torch.float32 else "tf32"


def rows_view(x: torch.Tensor) -> torch.Tensor:
    """(..., n) → (rows, n) with unit column stride; copies only when it must."""
    x2 = x.reshape(-1, x.shape[-1])  # (rows, n)
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def pick_row_block(n: int, block_size: int | None, max_block: int) -> int:
    """Columns per step for row kernels: the whole row up to `max_block`, longer rows loop."""
    if block_size is None:
        return min(next_power_of_2(n), max_block)
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size={block_size} must be a power of two >= 16, e.g. 1024")
    return block_size


def row_num_warps(block: int) -> int:
    """Warps for a one-row-per-program kernel: one warp per 256 columns, 1..16 (Triton tutorial rule)."""
    return min(max(block // 256, 1), 16)


# ---------------------------------------------------------------------------------------------
# Small-M matmul tiling and split-K, shared by the weight-only quantized matmuls
# ---------------------------------------------------------------------------------------------
def matmul_tiles(m: int, dtype: torch.dtype) -> dict:
    """Tiles for the weight-only matmuls, picked so their sm_90 builds do not spill registers (beyond
    16 bytes, per cuobjdump). Decode (M <= 16) takes BLOCK_M=16 and narrow N tiles so the grid spreads
    over N (and split-K); fp32 uses exact FMA products, no tensor cores, and needs short K tiles.
    BLOCK_K is an upper bound the kernel may lower. Speed is untuned: benchmarks/gpu_check.py measures."""
    if dtype == torch.float32:
        if m <= 16:
            return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 3}
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 16, "num_warps": 4, "num_stages": 3}
    if m <= 16:
        return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "num_warps": 4, "num_stages": 4}
    if m <= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 4}
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}


def split_k_plan(tiles: int, k: int, block_k: int, device: torch.device, split_k: int | None) -> tuple[int, int]:
    """Return (split_k, k_per_split). Decode GEMVs have few output tiles, so K is split until
    about two programs per SM run, keeping at least 4 K-steps per split.
    """
    k_steps = cdiv(k, block_k)
    if split_k is None:
        split_k = 1
        while tiles * split_k < 2 * sm_count(device) and k_steps // (split_k * 2) >= 4:
            split_k *= 2
    if split_k < 1:
        raise ValueError(f"split_k={split_k} must be >= 1")
    k_per_split = cdiv(k_steps, min(split_k, k_steps)) * block_k
    return cdiv(k, k_per_split), k_per_split


def split_k_target(out: torch.Tensor, split_k: int) -> torch.Tensor:
    """Where the kernel writes: `out` as (1, M, N), or an fp32 (split_k, M, N) partial buffer."""
    if split_k == 1:
        return out.unsqueeze(0)  # (1, M, N)
    return torch.empty((split_k, *out.shape), dtype=torch.float32, device=out.device)  # (S, M, N)


def split_k_finish(target: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Sum the fp32 partials into `out` (deterministic: no atomics)."""
    if target.shape[0] > 1:
        out.copy_(target.sum(dim=0))
    return out


# ---------------------------------------------------------------------------------------------
# Error metrics and the house bound
# ---------------------------------------------------------------------------------------------
def max_abs_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out.float() - ref.float()).abs().max().item()


# atol of the bound in units of max|ref|: fp32 allows summation-order noise; 16-bit types one ulp of
# the largest output (Triton 3.7's interpreter rounds fp32->bf16 by truncation, GPUs to nearest even).


# atol of the bound in units of max|ref|: fp32 allows summation-order noise; 16-bit types one ulp of
# the largest output (Triton 3.7's interpreter rounds fp32->bf16 by truncation, GPUs to nearest even).
ATOL_PER_UNIT = {torch.float32: 1e-5, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def bound_atol(dtype: torch.dtype, ref: torch.Tensor) -> float:
    return ATOL_PER_UNIT[dtype] * max(1.0, ref.abs().max().item())


def error_bound(out: torch.Tensor, eager: torch.Tensor, ref: torch.Tensor, atol: float) -> tuple[bool, float, float]:
    """The house bound: err(kernel vs fp32 ref) <= 2 * err(eager same dtype vs fp32 ref) + atol.

    Returns (ok, kernel_err, eager_err) with max-abs errors, so callers can print observed values.
    """
    k_err, e_err = max_abs_err(out, ref), max_abs_err(eager, ref)
    return k_err <= 2 * e_err + atol, k_err, e_err


# ---------------------------------------------------------------------------------------------
# Inputs, timing and the bench row
# ---------------------------------------------------------------------------------------------
def random_tensor(shape: tuple, dtype: torch.dtype, device, seed: int, scale: float = 1.0) -> torch.Tensor:
    """Seeded standard-normal inputs (never zeros) for tests and benchmarks."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, generator=g, device=device, dtype=torch.float32)  # fp32 so every dtype sees the same values
    return (x * scale).to(dtype)


def time_ms(
    fn: Callable[[], object], device: torch.device, reps: int = 5, triton_kernel: bool = True
) -> tuple[float, str]:
    """Median milliseconds per call and how it was measured.

    CUDA: `triton.testing.do_bench` (L2 flushed, CUDA events, median). CPU: a wall-clock median over
    `reps` calls after one warm-up, labelled "interpreter" for Triton kernels so nobody quotes it.
    """
    if device.type == "cuda":
        triton, _ = load_triton()
        return float(triton.testing.do_bench(fn, return_mode="median")), "cuda_do_bench_median"
    fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), "interpreter" if triton_kernel else "cpu_wall_median"


def bench_row(
    kernel: str,
    shape: tuple,
    dtype: torch.dtype,
    device: torch.device,
    ms: float,
    timing: str,
    bytes_moved: int,
    flops: int,
    out: torch.Tensor,
    ref: torch.Tensor,
    eager: torch.Tensor,
) -> dict:
    """The one bench row format every kernel returns: speed, bytes, FLOPs, and the kernel's error vs
    the fp32 reference next to eager-at-the-same-dtype's, with the house bound's verdict."""
    seconds = ms / 1e3
    atol = bound_atol(out.dtype, ref)
    ok, k_err, e_err = error_bound(out, eager, ref, atol)
    return {
        "kernel": kernel,
        "shape": list(shape),
        "dtype": str(dtype).replace("torch.", ""),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu:{os.cpu_count()}",
        "ms": ms,
        "gb_per_s": bytes_moved / seconds / 1e9,
        "tflop_per_s": flops / seconds / 1e12,
        "bytes": int(bytes_moved),
        "flops": int(flops),
        "max_abs_err": k_err,
        "rel_err": rel_error(ref, out),
        "eager_max_abs_err": e_err,
        "atol": atol,
        "bound_ok": ok,
        "timing": timing,
    }
