"""structured_pruning: config, verdicts, Llama MLP shapes and config shrink, the pruned MLP equals
the dense one with the dropped channels zeroed (so the scoring picked exactly those), CNN
filters removed through BN / depthwise / Linear consumers, true bytes drop."""
import pytest
import torch

from optimizers import registry
from optimizers.base import Target
from optimizers.measure import stored_bytes
from optimizers.quant.testing import check_config_roundtrip, logits, no_linear_workload, rel_err, tiny_lm_workload
from optimizers.techniques.structured_pruning import kept_count
from optimizers.workloads.base import VisionEval, Workload

T = registry.get("structured_pruning")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"amount": 0.5, "round_to": 16})
    assert T.check(Target(device="cpu", task="causal_lm")).status == "runs"
    assert T.check(Target(device="cpu", task="vision")).status == "runs"
    v = T.check(Target(device="cpu", task="encoder"))
    assert v.status == "refused" and "gated" in v.reason
    assert kept_count(352, 0.25, 8) == 264 and kept_count(352, 0.3, 8) == 248 and kept_count(10, 0.99, 8) == 8


def test_llama_mlp_shrinks_and_equals_zeroed_channels():
    wl = tiny_lm_workload()
    out = T.apply(wl, T.config({"amount": 0.5})).workload
    mlp, ref = out.model.model.layers[1].mlp, wl.model.model.layers[1].mlp
    assert mlp.gate_proj.weight.shape == (176, 128) and mlp.down_proj.weight.shape == (128, 176)
    assert out.model.config.intermediate_size == 176 == out.meta["config"]["intermediate_size"]
    assert wl.model.config.intermediate_size == 352  # input untouched
    saved = stored_bytes(wl.model) - stored_bytes(out.model)
    assert saved == 2 * 3 * 176 * 128 * 4  # 2 layers × 3 matrices × 176 channels × 128 × fp32
    score = (ref.gate_proj.weight ** 2).sum(1) + (ref.up_proj.weight ** 2).sum(1)
    dropped = score.argsort()[:176]
    zeroed = __import__("copy").deepcopy(ref)
    with torch.no_grad():
        zeroed.up_proj.weight[dropped] = 0
    x = torch.randn(2, 5, 128)
    assert torch.allclose(mlp(x), zeroed(x), atol=1e-5)
    assert rel_err(logits(wl), logits(out)) < 0.4  # random init: observed 0.29


def test_cnn_filters_removed():
    from optimizers.workloads.digits_cnn import DigitsCNN

    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    model = DigitsCNN().eval()
    wl = Workload(name="cnn", task="vision", model=model, calibration=[x],
                  eval=VisionEval(images=x, labels=torch.zeros(8, dtype=torch.long)))
    out = T.apply(wl, T.config({"amount": 0.5})).workload
    m = out.model
    assert m.stem[0].out_channels == 16 and m.blocks[0][0].groups == 16 and m.blocks[0][1].num_features == 16
    assert m.blocks[2][3].out_channels == 64 and m.classifier.in_features == 64
    assert m(x).shape == (8, 10)
    assert stored_bytes(m) / stored_bytes(model) < 0.35  # pointwise convs shrink in and out: observed 0.30


def test_nothing_to_prune_is_a_clear_error():
    with pytest.raises(ValueError, match="no gated MLP"):
        T.apply(no_linear_workload(), T.config())
