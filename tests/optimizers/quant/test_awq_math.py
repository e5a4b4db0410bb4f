"""AWQ: the scale formula, and that the searched scales reduce a layer's output error
versus s = 1 (plain RTN) when a few input channels are salient."""
import torch

from optimizers.quant.awq import awq_scales, awq_search, fake_quant
from optimizers.quant.testing import tiny_lm_workload


def test_scale_formula():
    m = torch.tensor([0.5, 2.0, 8.0])
    s = awq_scales(m, 0.5)
    raw = m.sqrt()
    assert torch.allclose(s, raw / (raw.max() * raw.min()).sqrt())
    assert torch.allclose(awq_scales(m, 0.0), torch.ones(3))


def test_awq_scales_reduce_layer_error_vs_scale_one():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2048, 256, generator=g)
    X[:, torch.arange(0, 256, 32)] *= 25  # salient channels (large mean |x|)
    W = torch.randn(128, 256, generator=g) * 0.02
    s, alpha, errs = awq_search([W], X, bits=4, group_size=64)
    assert alpha > 0 and errs[alpha] == min(errs.values())
    e1 = float(((X @ W.t() - X @ fake_quant(W, 4, 64).t()).pow(2).sum()) / (X @ W.t()).pow(2).sum())
    assert abs(errs[0.0] - e1) < 1e-6  # α = 0 is exactly RTN
    assert errs[alpha] < 0.5 * errs[0.0]  # observed 0.27× at α = 0.4
    # the scaled weights dequantized back: the layer with s folded reproduces errs[alpha]
    Wq = fake_quant(W * s, 4, 64) / s
    assert abs(float(((X @ W.t() - X @ Wq.t()).pow(2).sum()) / (X @ W.t()).pow(2).sum()) - errs[alpha]) < 1e-6


def test_awq_model_records_alpha_and_folds_into_norms():
    import copy

    from optimizers.quant.awq import awq_model
    from optimizers.quant.modules import QuantLinearInt4, default_predicate, find_linears

    wl = tiny_lm_workload(outliers=True)
    m = copy.deepcopy(wl.model)
    names = list(find_linears(m, default_predicate(m)))
    report = awq_model(m, names, wl.calibration, bits=4, group_size=32, grid=10)
    assert len(report) == 8  # per layer: qkv, o, gate/up, down
    for first, r in report.items():
        assert 0.0 <= r["alpha"] < 1.0 and r["error"] <= r["rtn_error"] + 1e-12
    qkv = report["model.layers.0.self_attn.q_proj"]
    assert qkv["group"] == [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]
    assert qkv["alpha"] > 0 and qkv["folded_into"] == "model.layers.0.input_layernorm"  # outliers: scaling pays
    down = report["model.layers.0.mlp.down_proj"]
    assert down["alpha"] == 0 or down["folded_into"] == "model.layers.0.mlp.up_proj"  # never gate_proj (SiLU)
    assert report["model.layers.0.self_attn.o_proj"]["folded_into"] is None  # GQA: v_proj is narrower
    assert all(isinstance(m.get_submodule(n), QuantLinearInt4) and m.get_submodule(n).input_scale is None
               for n in names)
