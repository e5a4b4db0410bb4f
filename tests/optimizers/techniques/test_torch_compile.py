"""torch_compile: config, verdicts (compile time said up front), the compiled model returns the
eager model's outputs, the state dict (true bytes) is unchanged, and the compile time is noted.
One tiny MLP, one shape: the inductor case compiles once and is marked slow."""
import pytest
import torch
from torch import nn

from optimizers import registry
from optimizers.base import Target
from optimizers.measure import stored_bytes
from optimizers.quant.testing import check_config_roundtrip
from optimizers.workloads.base import VisionEval, Workload

T = registry.get("torch_compile")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"mode": "max-autotune", "dynamic": None, "fullgraph": True, "warmup": False})
    v = T.check(Target(device="cpu", task="causal_lm"), T.config())
    assert v.status == "runs" and "compiles" in v.reason
    assert "CUDA graphs" in T.check(Target(device="cpu", task="vision"), T.config({"mode": "reduce-overhead"})).reason


def _mlp_workload():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 10)).eval()
    x = torch.randn(16, 1, 8, 8)
    wl = Workload(name="mlp", task="vision", model=model, calibration=[x],
                  eval=VisionEval(images=x, labels=torch.zeros(16, dtype=torch.long), batch_size=16))
    return wl, model, x


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_matches_eager_and_notes_compile_time(backend):
    """aot_eager checks the capture in ~2 s; inductor (marked slow: ~25–60 s on 2 shared cores) the kernels."""
    wl, model, x = _mlp_workload()
    out = T.apply(wl, T.config({"backend": backend}))
    with torch.inference_mode():
        assert torch.allclose(out.model(x), model(x), atol=1e-5)
    assert stored_bytes(out.model) == stored_bytes(model)
    assert out.meta["compile_time_s"] > 0 and "compile" in out.meta["step_notes"][1]
    assert not isinstance(wl.model, torch._dynamo.eval_frame.OptimizedModule)
