"""Triton kernels for the hot ops of a decoder LM, each beside its eager reference.

Every module reads top to bottom the same way: docstring (what, why, bytes/FLOPs, source), eager
`reference(..., upcast=True)`, the Triton kernel built lazily, the public wrapper with input checks,
and `bench(...) -> row`. Importing this package (or any module in it) needs neither Triton nor a GPU;
calling a kernel needs Triton plus a CUDA GPU, or TRITON_INTERPRET=1 to run on CPU for correctness.
`benchmarks/gpu_check.py` checks and times them all on a GPU; `kernels.roofline` gives the ceilings.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# name -> module; each module exposes a function of the same name, `reference` and `bench`.
KERNELS: dict[str, str] = {
    "rmsnorm": "kernels.rmsnorm",
    "softmax": "kernels.softmax",
    "swiglu": "kernels.swiglu",
    "matmul_w8a16": "kernels.matmul_w8a16",
    "matmul_w4a16": "kernels.matmul_w4a16",
    "flash_attention": "kernels.flash_attention",
}


def load(name: str) -> ModuleType:
    """Import a kernel module by its registry name (no Triton import happens here)."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; choose one of {sorted(KERNELS)}")
    return importlib.import_module(KERNELS[name])
