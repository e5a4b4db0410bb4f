"""Every kernel module imports without Triton, says clearly what is missing (Triton, a GPU), refuses
bf16 tl.dot under the interpreter, and returns a well-formed bench row."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kernels
from kernels import _common, flash_attention, matmul_w4a16, matmul_w8a16, rmsnorm, softmax, swiglu

REPO = Path(__file__).resolve().parents[2]

# name -> call(dtype) running the kernel on tiny valid CPU inputs
CALLS = {
    "rmsnorm": lambda dt: rmsnorm.rmsnorm(*rmsnorm.example_inputs(2, 32, dt, "cpu")),
    "softmax": lambda dt: softmax.softmax(softmax.example_inputs(2, 32, dt, "cpu")),
    "swiglu": lambda dt: swiglu.swiglu(*swiglu.example_inputs(2, 32, dt, "cpu")),
    "matmul_w8a16": lambda dt: matmul_w8a16.matmul_w8a16(*matmul_w8a16.example_inputs(2, 24, 64, dt, "cpu")),
    "matmul_w4a16": lambda dt: matmul_w4a16.matmul_w4a16(*matmul_w4a16.example_inputs(2, 24, 64, 32, dt, "cpu"), 32),
    "flash_attention": lambda dt: flash_attention.flash_attention(
        *flash_attention.example_inputs(1, 2, 1, 8, 8, 16, dt, "cpu")
    ),
}
DOT_KERNELS = ["matmul_w8a16", "matmul_w4a16", "flash_attention"]

# name -> bench(...) at tiny shapes on CPU
BENCHES = {
    "rmsnorm": lambda: rmsnorm.bench(3, 40, torch.float16, "cpu"),
    "softmax": lambda: softmax.bench(3, 40, torch.float16, "cpu"),
    "swiglu": lambda: swiglu.bench(3, 40, torch.float16, "cpu"),
    "matmul_w8a16": lambda: matmul_w8a16.bench(1, 24, 40, torch.float16, "cpu"),
    "matmul_w4a16": lambda: matmul_w4a16.bench(1, 24, 64, 32, torch.float16, "cpu"),
    "flash_attention": lambda: flash_attention.bench(1, 4, 2, 20, 16, True, torch.float16, "cpu"),
}
ROW_KEYS = {
    "kernel", "shape", "dtype", "device", "ms", "gb_per_s", "tflop_per_s", "bytes", "flops", "max_abs_err", "rel_err",
    "timing",
}


def test_registry_lists_every_kernel_module():
    assert set(kernels.KERNELS) == set(CALLS)
    for name in kernels.KERNELS:
        module = kernels.load(name)
        assert callable(getattr(module, name)) and callable(module.reference) and callable(module.bench)
    with pytest.raises(ValueError, match="unknown kernel 'gelu'"):
        kernels.load("gelu")


def test_modules_import_and_explain_without_triton():
    """A fresh interpreter where `import triton` fails: imports work, calls name what is missing."""
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import importlib, kernels, torch\n"
        "for m in kernels.KERNELS.values(): importlib.import_module(m)\n"
        "import kernels.roofline\n"
        "from kernels.rmsnorm import rmsnorm\n"
        "try:\n    rmsnorm(torch.randn(2, 8), torch.ones(8))\n"
        "except RuntimeError as e:\n    print('RAISED', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "RAISED Triton is not installed" in proc.stdout and "pip install triton" in proc.stdout


@pytest.mark.parametrize("name", sorted(CALLS))
def test_missing_triton_raises_clear_error(name, monkeypatch):
    real_import = importlib.import_module

    def no_triton(module, *args, **kwargs):
        if module.split(".")[0] == "triton":
            raise ImportError(f"No module named {module!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(_common.importlib, "import_module", no_triton)  # the lazy importer's only door
    with pytest.raises(RuntimeError, match="Triton is not installed.*pip install triton"):
        CALLS[name](torch.float32)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_cpu_without_interpreter_raises_clear_error(name, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="no GPU for the Triton kernels.*TRITON_INTERPRET=1"):
        CALLS[name](torch.float32)


@pytest.mark.parametrize("name", DOT_KERNELS)
def test_bf16_dot_kernels_refused_under_interpreter(name):
    with pytest.raises(RuntimeError, match="bf16 matmul kernels give wrong results"):
        CALLS[name](torch.bfloat16)


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_returns_a_complete_row(name):
    row = BENCHES[name]()
    assert ROW_KEYS <= set(row), f"missing keys {ROW_KEYS - set(row)}"
    assert row["kernel"] == name and row["timing"] == "interpreter" and row["dtype"] == "float16"
    assert row["ms"] > 0 and row["bytes"] > 0 and row["flops"] > 0
    assert row["bound_ok"], row  # observed: every kernel within the bound, e.g. rmsnorm 1.7e-3 vs eager 3.8e-3
