"""tucker_decomposition: config (exactly one of rank / ranks / energy), verdicts, a 3×3 conv becomes
1×1 → core → 1×1 with the energy-chosen ranks and computes the reconstructed kernel's conv, the
digits stem (1 input channel) needs no first 1×1, layers that would not shrink are kept, and
``pointwise`` factorizes 1×1 convs by SVD."""
import pydantic
import pytest
import torch
from torch import nn

from optimizers import registry
from optimizers import tensor_decomp as D
from optimizers.base import Target
from optimizers.measure import stored_bytes
from optimizers.quant.testing import check_config_roundtrip, cpu_target
from optimizers.workloads import load_workload
from optimizers.workloads.base import VisionEval, Workload

T = registry.get("tucker_decomposition")


@pytest.fixture(scope="module")
def digits():
    return load_workload("digits-cnn")


def conv_workload() -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 4)).eval()
    x = torch.randn(6, 8, 9, 9)
    return Workload(name="tiny-cnn", task="vision", model=model, eval=VisionEval(x, torch.zeros(6, dtype=torch.long)),
                    calibration=[x])


def test_config_and_verdicts(digits):
    check_config_roundtrip(T, {"ranks": [8, 4], "energy": None, "hooi_iters": 0})
    check_config_roundtrip(T, {"energy": 0.8, "pointwise": True, "include": ["blocks.*"]})
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        T.config({"rank": 4})  # energy defaults to 0.9: both set
    with pytest.raises(pydantic.ValidationError, match="ranks"):
        T.config({"ranks": [4], "energy": None})
    v = T.check(cpu_target(), T.config())
    assert v.status == "refused" and "no Conv2d" in v.reason
    assert T.check(Target.of(digits), T.config()).status == "runs"
    pointwise_only = Target(task="vision", convs=(("pw", 16, 8, 1, 1, 1),))
    assert T.check(pointwise_only, T.config()).status == "refused"
    assert T.check(pointwise_only, T.config({"pointwise": True})).status == "runs"


def test_conv_becomes_three_convs_with_energy_ranks():
    wl = conv_workload()
    rec = T.apply(wl, T.config({"energy": 0.8}))
    conv = wl.model[2]
    r_out, r_in = D.tucker2_ranks_for_energy(conv.weight, 0.8)
    chain = rec.model[2]
    assert [tuple(c.weight.shape) for c in chain] == [(r_in, 16, 1, 1), (r_out, r_in, 3, 3), (24, r_out, 1, 1)]
    assert chain[1].stride == (2, 2) and chain[2].bias is not None and chain[0].bias is None
    layer = rec.details["layers"]["2"]
    assert layer["ranks"] == [r_out, r_in] and layer["params_after"] == D.tucker2_params(24, 16, 3, 3, r_out, r_in)
    core, u_out, u_in = D.tucker2(conv.weight, (r_out, r_in))
    x = torch.randn(3, 16, 9, 9)
    ref = nn.functional.conv2d(x, D.tucker2_reconstruct(core, u_out, u_in), conv.bias, stride=2)
    assert (chain(x) - ref).abs().max() <= 1e-5 * ref.abs().max()  # observed ~2e-7
    assert D.rel_error(conv.weight, D.tucker2_reconstruct(core, u_out, u_in)) == pytest.approx(layer["kernel_rel_error"])
    full = T.apply(wl, T.config({"energy": 1.0}))
    assert full.details["layers"]["2"]["why"].endswith("(no saving)")  # full ranks hold more weights than the kernel
    errs = [T.apply(wl, T.config({"rank": r, "energy": None})).details["layers"]["2"]["kernel_rel_error"] for r in (2, 4, 8)]
    assert errs[0] > errs[1] > errs[2]  # observed 0.97 > 0.92 > 0.80 (random kernel)


def test_digits_stem_and_pointwise(digits):
    rec = T.apply(digits, T.config())
    stem = rec.model.stem[0]
    layer = rec.details["layers"]["stem.0"]
    assert layer["ranks"][1] == 1 and len(stem) == 2  # in = 1: no first 1×1, the core conv reads the image
    assert layer["params_before"] == 288 and layer["params_after"] == D.tucker2_params(32, 1, 3, 3, layer["ranks"][0], 1)
    assert list(rec.details["layers"]) == ["stem.0"]  # depthwise and 1×1 are not eligible by default
    assert any("grouped/depthwise" in n for n in rec.notes) and any("1×1" in n for n in rec.notes)
    pw = T.apply(digits, T.config({"rank": 16, "energy": None, "pointwise": True, "include": ["blocks.*"]}))
    chain = pw.model.blocks[2][3]
    assert [tuple(c.weight.shape) for c in chain] == [(16, 128, 1, 1), (128, 16, 1, 1)]
    assert stored_bytes(digits.model) - stored_bytes(pw.model) == 4 * sum(o * i - 16 * (o + i) for o, i in
                                                                          ((64, 32), (128, 64), (128, 128)))
    assert type(digits.model.blocks[2][3]) is nn.Conv2d  # input untouched


def test_bad_inputs(digits):
    with pytest.raises(ValueError, match="no eligible Conv2d"):
        T.apply(digits, T.config({"include": ["blocks.*"]}))
