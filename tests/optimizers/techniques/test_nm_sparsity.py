"""nm_sparsity: config, verdicts (CPU runs with a no-speed-up reason), exact 2:4 on every
Linear but lm_head, magnitudes kept are the largest two of each group, bytes unchanged (dense);
other N:M patterns (4:8, 1:4), CSR storage where the pattern is sparse enough (1:8), bad
patterns named."""
import pytest
import torch

from optimizers import registry
from optimizers import sparsity as S
from optimizers.base import Target
from optimizers.measure import stored_bytes
from optimizers.quant.testing import check_bad_inputs, check_config_roundtrip, check_verdicts, tiny_lm_workload

T = registry.get("nm_sparsity")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"include_lm_head": True, "pattern": "4:8"})
    check_verdicts(T)
    assert "no speed-up" in T.check(Target(device="cpu", task="causal_lm")).reason
    assert T.check(Target(device="cuda", capability=(9, 0), task="causal_lm")).reason == ""
    assert "8.0" in T.check(Target(device="cuda", capability=(7, 5), task="causal_lm")).reason


def test_mask_is_2_4_by_magnitude():
    wl = tiny_lm_workload()
    out = T.apply(wl, T.config()).workload
    pairs = dict(S.prunable_linears(wl.model))
    for name, m in S.prunable_linears(out.model):
        assert S.is_nm_sparse(m.weight) and S.sparsity(m.weight) == 0.5
        w = pairs[name].weight.detach().abs().reshape(m.out_features, -1, 4)
        assert torch.equal(m.weight.detach().abs().reshape_as(w).sum(-1), w.topk(2, dim=-1).values.sum(-1))
    assert S.sparsity(out.model.lm_head.weight) == 0
    assert stored_bytes(out.model) == stored_bytes(wl.model)


@pytest.mark.parametrize("pattern, zeros", [("4:8", 0.5), ("1:4", 0.75)])
def test_other_patterns(pattern, zeros):
    n, m = (int(x) for x in pattern.split(":"))
    out = T.apply(tiny_lm_workload(), T.config({"pattern": pattern})).workload
    for _, lin in S.prunable_linears(out.model):
        assert S.is_nm_sparse(lin.weight, n, m) and S.sparsity(lin.weight) == zeros


def test_sparse_enough_patterns_are_stored_csr():
    wl = tiny_lm_workload()
    rec = T.apply(wl, T.config({"pattern": "1:8"}))
    assert any(isinstance(mod, S.SparseCSRLinear) for mod in rec.model.modules())
    assert stored_bytes(rec.model) < stored_bytes(wl.model)
    assert "2:4 only" in T.check(Target(device="cuda", capability=(9, 0), task="causal_lm"), T.config({"pattern": "1:8"})).reason


@pytest.mark.parametrize("bad", ["unstructured", "4:4", "2-4", "0:4"])
def test_bad_patterns_are_named(bad):
    with pytest.raises(ValueError, match="pattern"):
        T.config({"pattern": bad})


def test_bad_inputs():
    check_bad_inputs(T, {})
