"""nm_sparsity: config, verdicts (CPU runs with a no-speed-up reason), exact 2:4 on every
Linear but lm_head, magnitudes kept are the largest two of each group, bytes unchanged (dense)."""
import pytest
import torch

from optimizers import registry
from optimizers import sparsity as S
from optimizers.base import Target
from optimizers.measure import stored_bytes
from optimizers.quant.testing import check_bad_inputs, check_config_roundtrip, check_verdicts, tiny_lm_workload

T = registry.get("nm_sparsity")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"include_lm_head": True})
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


def test_bad_inputs():
    check_bad_inputs(T, {})
