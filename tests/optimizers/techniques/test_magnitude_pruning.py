"""magnitude_pruning: config round-trip, verdicts, exact sparsity, true stored bytes (dense zeros
do not shrink, CSR does), input untouched, quality falls as sparsity rises."""
import pytest
import torch

from optimizers import registry
from optimizers import sparsity as S
from optimizers.measure import stored_bytes
from optimizers.quant.testing import check_config_roundtrip, check_verdicts, logits, no_linear_workload, rel_err, tiny_lm_workload

T = registry.get("magnitude_pruning")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"amount": 0.7, "scope": "layer", "store_sparse": False})
    check_verdicts(T)
    with pytest.raises(ValueError):
        T.config({"amount": 1.0})


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_half_sparsity_is_exact_and_stays_dense(scope):
    wl = tiny_lm_workload()
    before = stored_bytes(wl.model)
    rec = T.apply(wl, T.config({"amount": 0.5, "scope": scope}))
    out = rec.workload
    layers = S.prunable_linears(out.model)
    assert len(layers) == 14 and S.layers_sparsity(layers) == 0.5
    if scope == "layer":
        assert all(S.sparsity(m.weight) == 0.5 for _, m in layers)
    assert S.sparsity(out.model.lm_head.weight) == 0.0 and S.sparsity(wl.model.model.layers[0].mlp.up_proj.weight) == 0
    assert stored_bytes(out.model) == before  # dense zeros are still stored
    assert "stay dense" in rec.notes[1]
    assert 0.2 < rel_err(logits(wl), logits(out)) < 0.6  # random-init tiny llama: observed 0.40


def test_high_sparsity_is_stored_as_csr():
    wl = tiny_lm_workload()
    rec = T.apply(wl, T.config({"amount": 0.9, "scope": "layer"}))
    out = rec.workload
    csr = [m for m in out.model.modules() if isinstance(m, S.SparseCSRLinear)]
    assert len(csr) == 14 and all(m.values.numel() == round(0.1 * m.in_features * m.out_features) for m in csr)
    lin_bytes = sum(m.weight.numel() * 4 for _, m in S.prunable_linears(wl.model))
    saved = stored_bytes(wl.model) - stored_bytes(out.model)
    assert saved / lin_bytes > 0.75  # 1 − 0.1·8/4 − row pointers: observed 0.79
    dense = T.apply(wl, T.config({"amount": 0.9, "scope": "layer", "store_sparse": False})).workload
    assert torch.allclose(logits(out), logits(dense), atol=1e-4)  # CSR is storage, not a change of the function


def test_no_linear_is_a_clear_error():
    with pytest.raises(ValueError, match="no nn.Linear"):
        T.apply(no_linear_workload(), T.config())


def test_include_conv_prunes_convolutions_too():
    from optimizers.workloads import load_workload

    wl = load_workload("digits-cnn")
    rec = T.apply(wl, T.config({"amount": 0.5, "scope": "layer", "include_conv": True}))
    convs = [m for m in rec.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(S.sparsity(m.weight) == pytest.approx(0.5, abs=0.02) for m in convs)
    plain = T.apply(wl, T.config({"amount": 0.5, "scope": "layer"}))
    assert all(S.sparsity(m.weight) == 0 for m in plain.model.modules() if isinstance(m, torch.nn.Conv2d))
