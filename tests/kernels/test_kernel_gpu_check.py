"""benchmarks/gpu_check.py: exits clearly without a GPU; its --smoke run checks every kernel on CPU."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import kernels

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_exits_with_a_clear_message_without_cuda(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        gpu_check.main([])
    assert exc.value.code == 2
    assert "no CUDA GPU visible" in capsys.readouterr().err


def test_gpu_cases_cover_every_kernel_at_realistic_sizes(gpu_check):
    cases = gpu_check.gpu_cases()
    assert {c.kernel for c in cases} == set(kernels.KERNELS)
    assert {c.args["m"] for c in cases if c.kernel.startswith("matmul")} == {1, 16}
    assert {c.args["t"] for c in cases if c.kernel == "flash_attention"} == {1024, 4096, 8192}


def test_smoke_run_checks_every_kernel(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.main(["--smoke"]) == 0
    report = json.loads((tmp_path / "gpu_check_smoke.json").read_text())
    assert {r["kernel"] for r in report["rows"]} == {c.kernel for c in gpu_check.smoke_cases()}
    assert all(r["bound_ok"] and r["baselines"] for r in report["rows"])
