"""svd_factorization: config (exactly one of rank/energy/max_error), verdicts, the chosen layers become
two Linears of the stated rank, layers that would not shrink are skipped, true bytes drop, the error
falls as the rank rises, and max_error picks per layer the smallest rank whose error meets it."""
import pydantic
import pytest
import torch

from optimizers import lowrank as L
from optimizers import registry
from optimizers.measure import stored_bytes
from optimizers.quant.testing import check_bad_inputs, check_config_roundtrip, check_verdicts, logits, rel_err, tiny_lm_workload

T = registry.get("svd_factorization")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"rank": 16, "energy": None, "include": ["*.mlp.*"]})
    check_config_roundtrip(T, {"energy": 0.8})
    check_config_roundtrip(T, {"max_error": 0.3, "energy": None})
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        T.config({"rank": 8})  # energy defaults to 0.9: both set
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        T.config({"max_error": 0.3})
    with pytest.raises(pydantic.ValidationError, match="max_error"):
        T.config({"max_error": 1.0, "energy": None})
    check_verdicts(T)


def test_rank_shapes_skip_and_bytes():
    wl = tiny_lm_workload()
    rec = T.apply(wl, T.config({"rank": 48, "energy": None}))
    out = rec.workload
    mlp = out.model.model.layers[0].mlp
    assert isinstance(mlp.up_proj, torch.nn.Sequential)
    assert mlp.up_proj[0].weight.shape == (48, 128) and mlp.up_proj[1].weight.shape == (352, 48)
    # k_proj, v_proj are 64×128: 48·192 > 64·128, so they stay whole (4 skipped)
    assert type(out.model.model.layers[0].self_attn.k_proj) is torch.nn.Linear
    assert type(out.model.lm_head) is torch.nn.Linear
    saved = stored_bytes(wl.model) - stored_bytes(out.model)
    assert saved == 4 * 2 * (3 * (352 * 128 - 48 * 480) + 2 * (128 * 128 - 48 * 256))  # 3 MLP + q,o per layer
    assert "skipped 4" in rec.notes[1]


def test_pattern_energy_and_error_falls_with_rank():
    wl = tiny_lm_workload()
    mlp_only = T.apply(wl, T.config({"rank": 32, "energy": None, "include": ["*.mlp.*"]})).workload
    assert type(mlp_only.model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    errs = [rel_err(logits(wl), logits(T.apply(wl, T.config({"rank": r, "energy": None})).workload)) for r in (16, 48, 80)]
    assert errs[0] > errs[1] > errs[2]  # observed 0.94 > 0.58 > 0.28 (random weights: flat spectrum)
    rec = T.apply(wl, T.config({"energy": 0.5, "include": ["*.mlp.up_proj"]}))
    out = rec.workload
    r = out.model.model.layers[0].mlp.up_proj[0].out_features
    s = torch.linalg.svdvals(wl.model.model.layers[0].mlp.up_proj.weight.double())
    assert (s[:r] ** 2).sum() / (s ** 2).sum() >= 0.5 > (s[: r - 1] ** 2).sum() / (s ** 2).sum()


def test_max_error_picks_the_smallest_rank_meeting_it():
    wl = tiny_lm_workload()
    rec = T.apply(wl, T.config({"max_error": 0.6, "energy": None}))
    layers = rec.details["layers"]
    assert len(layers) == 14  # every Linear but the head: 2 layers × 7
    mods = dict(rec.model.named_modules())
    for name, layer in layers.items():
        w = wl.model.get_submodule(name).weight.detach().double()
        s = torch.linalg.svdvals(w)
        r = layer["rank"]
        assert L.tail_error(s, r) <= 0.6 + 1e-9 < L.tail_error(s, r - 1)  # smallest rank meeting the bound
        if layer["saves"]:
            first, second = mods[name]
            assert first.out_features == r
            approx = (second.weight @ first.weight).detach().double()
            assert float((w - approx).norm() / w.norm()) == pytest.approx(layer["rel_error"], abs=1e-5)
            assert layer["rel_error"] <= 0.6
        else:
            assert type(mods[name]) is torch.nn.Linear
    assert rec.diagnostics["svd_rel_error_max"] <= 0.6 and "≤ 0.6" in rec.notes[2]


def test_bad_inputs():
    check_bad_inputs(T, {})
    with pytest.raises(ValueError, match="no nn.Linear matching"):
        T.apply(tiny_lm_workload(), T.config({"include": ["nothing.*"]}))
