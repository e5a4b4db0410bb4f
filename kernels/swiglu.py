"""Fused SwiGLU activation: y = silu(gate) * up = gate / (1 + exp(-gate)) * up, fp32 inside.
Why: eager runs silu and the product as two kernels through an intermediate; fused, gate and up are
read once and y written once. Bytes: 3*numel*elem. FLOPs: 5*numel.
Source: Shazeer 2020, "GLU Variants Improve Transformer" (the LLaMA MLP activation).
"""
from __future__ import annotations

import torch

from kernels import _common

BLOCK = 1024  # elements per program


# ---------------------------------------------------------------------------------------------
# (2) Reference
# ---------------------------------------------------------------------------------------------
def reference(gate: torch.Tensor, up: torch.Tensor, upcast: bool = True) -> torch.Tensor:
    """Eager silu(gate) * up; upcast=True computes and returns fp32, False stays in gate.dtype."""
    if upcast:
        gate, up = gate.float(), up.float()
    return torch.nn.functional.silu(gate) * up


# ---------------------------------------------------------------------------------------------
# (3) Kernel
# ---------------------------------------------------------------------------------------------
@_common.jit_cache
def _build(interpret: bool):
    triton, tl = _common.load_triton()

    @triton.jit
    def _swiglu_fwd(
        G,  # *dtype (numel,) contiguous gate
        U,  # *dtype (numel,) contiguous up
        Y,  # *dtype (numel,) contiguous output
        numel,  # elements
        BLOCK: tl.constexpr,  # elements per program
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
        y = g / (1.0 + tl.exp(-g)) * u
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)

    return _swiglu_fwd


# ---------------------------------------------------------------------------------------------
# (4) Public wrapper
# ---------------------------------------------------------------------------------------------
def _check_inputs(gate: torch.Tensor, up: torch.Tensor) -> None:
    _common.check_dtype("gate", gate, _common.FLOAT_DTYPES, _common.ACTIVATION_DTYPES_HELP)
    if up.dtype != gate.dtype:
        raise ValueError(f"up has dtype {up.dtype} but gate has {gate.dtype}; cast one with `.to(...)`.")
    if gate.shape != up.shape:
        raise ValueError(
            f"gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape; "
            "if they come from one fused projection, split it with `.chunk(2, dim=-1)`."
        )
    _common.check_same_device(gate=gate, up=up)


def swiglu(gate: torch.Tensor, up: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """silu(gate) * up elementwise for any shape; returns gate.dtype (non-contiguous inputs are copied)."""
    _check_inputs(gate, up)
    _common.check_runtime(gate.device)
    y = _common.check_out(out, tuple(gate.shape), gate.dtype, gate.device)
    numel = gate.numel()
    if numel == 0:
        return y
    _build()[(_common.cdiv(numel, BLOCK),)](gate.contiguous(), up.contiguous(), y, numel, BLOCK=BLOCK, num_warps=4)
    return y


# ---------------------------------------------------------------------------------------------
# (5) Benchmark
# ---------------------------------------------------------------------------------------------
def bytes_moved(numel: int, dtype: torch.dtype) -> int:
    return 3 * numel * _common.element_size(dtype)


def flops(numel: int) -> int:
    return 5 * numel  # negate, exp, add, divide, multiply


def example_inputs(rows: int, n: int, dtype: torch.dtype, device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gate = _common.random_tensor((rows, n), dtype, device, seed, scale=2.0)  # (rows, n)
    up = _common.random_tensor((rows, n), dtype, device, seed + 1)  # (rows, n)
    return gate, up


def bench(rows: int = 8192, n: int = 8192, dtype: torch.dtype = torch.bfloat16, device="cuda") -> dict:
    device = torch.device(device)
    gate, up = example_inputs(rows, n, dtype, device)
    out = swiglu(gate, up)
    ms, timing = _common.time_ms(lambda: swiglu(gate, up, out=out), device)
    return _common.bench_row(
        "swiglu", (rows, n), dtype, device, ms, timing, bytes_moved(rows * n, dtype), flops(rows * n),
        out, reference(gate, up), reference(gate, up, upcast=False),
    )
