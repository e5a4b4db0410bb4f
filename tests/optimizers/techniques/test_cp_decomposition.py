"""cp_decomposition: config (exactly one of rank / max_error), verdicts (no Conv2d, nothing eligible,
a pattern that matches nothing), the eligible digits-cnn stem becomes four convs whose output is the
reconstructed kernel's, max_error picks the smallest rank meeting it, and layers that would not
shrink are kept with the reason."""
import pydantic
import pytest
import torch

from optimizers import registry
from optimizers import tensor_decomp as D
from optimizers.base import Target
from optimizers.measure import parameter_count, stored_bytes
from optimizers.quant.testing import check_config_roundtrip, cpu_target
from optimizers.workloads import load_workload

T = registry.get("cp_decomposition")


@pytest.fixture(scope="module")
def digits():
    return load_workload("digits-cnn")


def test_config_and_verdicts(digits):
    check_config_roundtrip(T, {"rank": 4, "max_error": None, "include": ["stem.*"]})
    check_config_roundtrip(T, {"max_error": 0.2, "iters": 50})
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        T.config({"rank": 4})  # max_error defaults to 0.1: both set
    with pytest.raises(pydantic.ValidationError, match="max_error"):
        T.config({"max_error": 1.5})
    v = T.check(cpu_target(), T.config())
    assert v.status == "refused" and "no Conv2d" in v.reason  # a causal LM
    assert T.check(Target.of(digits), T.config()).status == "runs"
    only_depthwise = Target(task="vision", convs=(("dw", 8, 8, 3, 3, 8), ("pw", 16, 8, 1, 1, 1)))
    v = T.check(only_depthwise, T.config())
    assert v.status == "refused" and "grouped/depthwise" in v.reason and "1×1" in v.reason
    v = T.check(Target.of(digits), T.config({"include": ["head.*"]}))
    assert v.status == "refused" and v.blame == "config" and "stem.0" in v.reason


def test_stem_becomes_four_convs_computing_the_cp_kernel(digits):
    rec = T.apply(digits, T.config({"rank": 5, "max_error": None, "iters": 30}))
    stem, old = rec.model.stem[0], digits.model.stem[0]
    assert [tuple(c.weight.shape) for c in stem] == [(5, 1, 1, 1), (5, 1, 3, 1), (5, 1, 1, 3), (32, 5, 1, 1)]
    assert [c.groups for c in stem] == [1, 5, 5, 1]
    assert parameter_count(digits.model) - parameter_count(rec.model) == 288 - 5 * (1 + 3 + 3 + 32)
    assert stored_bytes(digits.model) - stored_bytes(rec.model) == 4 * (288 - 5 * 39)
    factors = [c.weight.detach().double() for c in stem]  # rebuild K from the four convs' weights
    kernel = torch.einsum("ri,rh,rw,or->oihw", factors[0][:, :, 0, 0], factors[1][:, 0, :, 0],
                          factors[2][:, 0, 0, :], factors[3][:, :, 0, 0])
    layer = rec.details["layers"]["stem.0"]
    assert layer["ranks"] == [5] and abs(D.rel_error(old.weight, kernel) - layer["kernel_rel_error"]) < 1e-5
    x = digits.eval.images[:8]
    ref = torch.nn.functional.conv2d(x, kernel.float(), padding=1)
    assert (stem(x) - ref).abs().max() <= 1e-5 * ref.abs().max()  # observed 4e-7
    assert type(digits.model.stem[0]) is torch.nn.Conv2d  # input untouched
    assert "blocks.0.0" in rec.details["not_eligible"] and "blocks.0.3" in rec.details["not_eligible"]


def test_max_error_picks_the_smallest_rank_and_keeps_layers_that_cannot_meet_it(digits):
    rec = T.apply(digits, T.config({"max_error": 0.45, "iters": 30}))
    r = rec.details["layers"]["stem.0"]["ranks"][0]
    assert rec.details["layers"]["stem.0"]["kernel_rel_error"] <= 0.45
    assert D.cp_als(digits.model.stem[0].weight, r - 1, iters=30)[1] > 0.45  # observed r = 6 (error 0.383; r = 5: 0.479)
    kept = T.apply(digits, T.config({"max_error": 0.01, "iters": 10}))
    assert not kept.details["layers"]["stem.0"]["decomposed"]  # R ≤ 7 saves weights; none reaches 1 %
    assert "no rank met" in kept.notes[0] and stored_bytes(kept.model) == stored_bytes(digits.model)
    rec = T.apply(digits, T.config({"rank": 8, "max_error": None, "iters": 10}))
    assert "no saving" in rec.details["layers"]["stem.0"]["why"]  # 8 · 39 = 312 ≥ 288


def test_bad_inputs(digits):
    with pytest.raises(ValueError, match="no eligible Conv2d"):
        T.apply(digits, T.config({"include": ["blocks.*"]}))
