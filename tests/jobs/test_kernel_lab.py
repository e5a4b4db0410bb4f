"""Kernel lab jobs: validation, an interpreter correctness check executed for real, and the
page rendering stored results."""
from __future__ import annotations

import pytest

from jobs import kernel_lab


def test_validation_names_the_field(migrated_sqlite):
    with pytest.raises(ValueError, match="kernel='nope' is unknown"):
        kernel_lab.validate("nope", {}, "float16", "cpu")
    with pytest.raises(ValueError, match="has no parameter"):
        kernel_lab.validate("rmsnorm", {"cols": 3}, "float16", "cpu")
    with pytest.raises(ValueError, match="must be a positive integer"):
        kernel_lab.validate("rmsnorm", {"rows": 0, "n": 8}, "float16", "cpu")
    with pytest.raises(ValueError, match="too large for Triton's interpreter"):
        kernel_lab.validate("rmsnorm", {"rows": 8192, "n": 8192}, "float16", "cpu")
    with pytest.raises(ValueError, match="dtype='int3'"):
        kernel_lab.validate("rmsnorm", {}, "int3", "cuda")


def test_interpreter_check_runs_and_is_stored(migrated_sqlite):
    bench_id = kernel_lab.submit("rmsnorm", {"rows": 37, "n": 129}, "float32", "cpu", enqueue=False)
    assert kernel_lab.execute(bench_id, worker="test") == "succeeded"
    row = next(r for r in kernel_lab.recent() if r["id"] == bench_id)
    assert row["status"] == "succeeded" and row["mode"] == "interpreter"
    assert row["bound_ok"] is True and row["max_abs_err"] < 1e-4  # fp32 interpreter vs fp32 reference
    assert row["timing"] == "interpreter"
    assert kernel_lab.execute(bench_id) == "not queued"  # never twice


def test_gpu_request_on_cpu_worker_fails_clearly(migrated_sqlite):
    bench_id = kernel_lab.submit("swiglu", {"rows": 64, "n": 64}, "float16", "cuda", enqueue=False)
    assert kernel_lab.execute(bench_id) == "failed"
    row = next(r for r in kernel_lab.recent() if r["id"] == bench_id)
    assert "no CUDA GPU" in row["error"]
