"""fp8: config, verdicts (activations need CUDA cc ≥ 8.9: needs_gpu elsewhere, apply refuses
clearly), float8 storage, bytes, error."""
import pytest
import torch

from optimizers import registry
from optimizers.base import Target
from optimizers.quant.fp8 import QuantLinearFP8
from optimizers.quant.testing import (check_bad_inputs, check_config_roundtrip, check_swapped, check_verdicts,
                                      linear_weight_bytes, logits, rel_err, tiny_lm_workload)

T = registry.get("fp8")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"fmt": "e5m2", "granularity": "per_tensor", "activations": "dynamic"})
    check_verdicts(T, T.config())
    with pytest.raises(ValueError, match="e4m3"):
        T.config({"fmt": "e3m4"})
    dyn = T.config({"activations": "dynamic"})
    v = T.check(Target(device="cpu", task="causal_lm"), dyn)
    assert v.status == "needs_gpu" and "compute capability ≥ 8.9" in v.reason and "activations='none'" in v.reason
    assert T.check(Target(device="cuda", capability=(8, 0), task="causal_lm"), dyn).status == "needs_gpu"
    assert T.check(Target(device="cuda", capability=(9, 0), task="causal_lm"), dyn).status == "runs"


def test_apply_refuses_fp8_activations_on_cpu():
    with pytest.raises(ValueError, match="compute capability ≥ 8.9"):
        T.apply(tiny_lm_workload(), T.config({"activations": "dynamic"}))


@pytest.mark.parametrize("fmt,dtype,max_err", [("e4m3", torch.float8_e4m3fn, 0.06), ("e5m2", torch.float8_e5m2, 0.12)])
def test_apply_weight_only(fmt, dtype, max_err):
    wl = tiny_lm_workload()
    out = T.apply(wl, T.config({"fmt": fmt})).workload
    names = check_swapped(wl, out, QuantLinearFP8)
    assert all(out.model.get_submodule(n).qweight.dtype == dtype for n in names)
    q, f16 = linear_weight_bytes(out.model)
    assert q / f16 < 0.52  # 1 byte + fp32 row scale: observed 0.513
    assert rel_err(logits(wl), logits(out)) < max_err  # observed e4m3 0.036, e5m2 0.089


def test_bad_inputs():
    check_bad_inputs(T, {})
