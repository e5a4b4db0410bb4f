"""Compile each kernel ahead of time for an H100/H200 (sm_90) the way its real wrapper launches it
with the GPU-default tiles; no GPU needed (Triton ships ptxas). Prints one JSON line per case.

Run in a fresh process without TRITON_INTERPRET (test_kernel_sm90_build.py does): once triton.language
is imported in interpreter mode its own helpers (tl.sum, tl.max...) are interpreter objects and cannot
be lowered for a GPU. The interpreter tests run the same kernel source but not Triton's GPU lowering
(layouts, tl.dot on tensor cores, pipelining, shared memory): this covers that path without a GPU.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from kernels import _common, flash_attention, matmul_w4a16, matmul_w8a16, rmsnorm, softmax, swiglu  # noqa: E402

TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int8: "i8", torch.uint8: "u8"}
BF16, FP32 = torch.bfloat16, torch.float32


def _w8(m, n, k, dtype=BF16, **kw):
    return lambda: matmul_w8a16.matmul_w8a16(*matmul_w8a16.example_inputs(m, n, k, dtype, "cpu"), **kw)


def _w4(m, n, k, g, dtype=BF16, **kw):
    return lambda: matmul_w4a16.matmul_w4a16(*matmul_w4a16.example_inputs(m, n, k, g, dtype, "cpu"), g, **kw)


def _attn(t_q, t_k, d, dtype, causal):
    return lambda: flash_attention.flash_attention(
        *flash_attention.example_inputs(1, 4, 2, t_q, t_k, d, dtype, "cpu"), causal=causal
    )


# case -> (module, launch): CPU tensors shaped so the wrapper picks the tiles a real workload gets
LAUNCHES = {
    "rmsnorm-8192": (rmsnorm, lambda: rmsnorm.rmsnorm(*rmsnorm.example_inputs(2, 8192, BF16, "cpu"))),
    "softmax-looped": (softmax, lambda: softmax.softmax(softmax.example_inputs(2, 20000, BF16, "cpu"))),
    "swiglu": (swiglu, lambda: swiglu.swiglu(*swiglu.example_inputs(2, 4096, BF16, "cpu"))),
    "w8a16-decode-splitk": (matmul_w8a16, _w8(1, 4096, 4096, split_k=4)),
    "w8a16-prefill": (matmul_w8a16, _w8(512, 256, 256)),
    "w4a16-decode-splitk": (matmul_w4a16, _w4(1, 4096, 4096, 128, split_k=4)),
    "w4a16-prefill": (matmul_w4a16, _w4(512, 256, 256, 128)),
    "w4a16-fp32-decode": (matmul_w4a16, _w4(1, 512, 512, 128, FP32, split_k=2)),
    "w8a16-fp32-prefill": (matmul_w8a16, _w8(512, 256, 256, FP32)),
    "attn-d128-causal": (flash_attention, _attn(64, 64, 128, BF16, True)),
    "attn-d128-decode": (flash_attention, _attn(1, 64, 128, BF16, False)),
    "attn-d64-fp32": (flash_attention, _attn(64, 64, 64, FP32, True)),
}


class _Capture:
    """Stands in for the jitted kernel: records the launch the wrapper makes instead of running it."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((args, dict(kwargs)))


def capture_launch(module, launch) -> tuple[tuple, dict]:
    real, capture = module._build, _Capture()
    module._build = lambda: capture
    try:
        launch()
    finally:
        module._build = real
    (args, kwargs), = capture.launches
    return args, kwargs


def compile_for_sm90(fn, args: tuple, kwargs: dict):
    """triton.compile the launch as Triton would specialize it: pointers and ints divisible by 16 hinted."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options = {"num_warps": kwargs.pop("num_warps"), "num_stages": kwargs.pop("num_stages", 3)}
    signature, attrs = {}, {}
    for i, (name, arg) in enumerate(zip(fn.arg_names, args)):
        if isinstance(arg, torch.Tensor):
            signature[name], aligned = "*" + TYPES[arg.dtype], arg.data_ptr() % 16 == 0
        elif isinstance(arg, int):
            signature[name], aligned = "i32", arg % 16 == 0
        else:
            signature[name], aligned = "fp32", False
        if aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    signature.update({name: "constexpr" for name in kwargs})
    return triton.compile(ASTSource(fn, signature, kwargs, attrs), target=GPUTarget("cuda", 90, 32), options=options)


def spill_bytes(cubin: bytes) -> int:
    """Per-thread stack (register spills) of a cubin, read with the cuobjdump Triton ships."""
    import triton

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True, text=True)
    return int(re.search(r"STACK:(\d+)", usage.stdout).group(1))


def main() -> None:
    if _common.interpreter_active():
        sys.exit("sm90_build: unset TRITON_INTERPRET; this checks the GPU lowering")
    _common.check_runtime = lambda device: None  # CPU tensors only shape the launch; nothing runs
    _common.check_interpreter_dot = lambda dtype: None
    for case, (module, launch) in sorted(LAUNCHES.items()):
        args, kwargs = capture_launch(module, launch)
        try:
            compiled = compile_for_sm90(module._build.__wrapped__(False), args, kwargs)
            result = {
                "case": case,
                "ok": bool(compiled.asm["cubin"]),
                "shared_bytes": compiled.metadata.shared,
                "spill_bytes": spill_bytes(compiled.asm["cubin"]),
            }
        except Exception as exc:  # report every case, not just the first failure
            result = {"case": case, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TRITON_INTERPRET", "0")
    main()
