"""Kernel tests run Triton's CPU interpreter: TRITON_INTERPRET must be set before triton is imported.

Shared fixtures: `poisoned` (NaN-filled output buffers with a guard tail, to prove every element is
written and nothing past the end) and `assert_bounded` (the house error bound).
"""
import os

os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton

import pytest  # noqa: E402
import torch  # noqa: E402
import triton.language as tl  # noqa: E402  imported now, so its own helpers (tl.sum, tl.max) are interpreted

from kernels import _common  # noqa: E402

GUARD = 64  # poisoned elements after the output that must stay untouched


@pytest.fixture(autouse=True, scope="session")
def _triton_in_interpreter_mode():
    """Triton builds tl.sum, tl.max... once, at import, for the mode TRITON_INTERPRET had then. If
    something (torchao, peft, inductor) imported triton before this conftest ran, kernels cannot run in
    the interpreter: say so instead of failing every test with "Cannot call @triton.jit'd outside..."."""
    if type(tl.max).__name__ != "InterpretedFunction":
        pytest.fail(
            "triton was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1 (e.g. by torchao); "
            "run `pytest tests/kernels` on its own, or set TRITON_INTERPRET=1 in tests/conftest.py or the shell",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def poisoned():
    """poisoned(shape, dtype) -> (out, check): `out` is a NaN view into a larger NaN buffer;
    check() asserts every element of out was written and the guard tail was not."""

    def make(shape, dtype):
        numel = 1
        for s in shape:
            numel *= s
        buf = torch.full((numel + GUARD,), float("nan"), dtype=dtype)
        out = buf[:numel].view(shape)

        def check():
            assert not out.isnan().any(), f"{int(out.isnan().sum())} of {numel} outputs never written (mask too tight)"
            assert buf[numel:].isnan().all(), "kernel wrote past the end of the output (mask too loose)"

        return out, check

    return make


@pytest.fixture
def assert_bounded():
    """assert_bounded(out, eager, ref): err(kernel) <= 2 * err(eager same dtype) + atol, vs fp32 ref."""

    def check(out, eager, ref):
        atol = _common.bound_atol(out.dtype, ref)  # one 16-bit ulp of max|ref|, or 1e-5 for fp32
        ok, k_err, e_err = _common.error_bound(out, eager, ref, atol)
        assert ok, f"kernel err {k_err:.3g} > 2 * eager err {e_err:.3g} + atol {atol:.3g} ({out.dtype})"
        return k_err, e_err

    return check
