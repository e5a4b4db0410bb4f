"""SmoothQuant: the factors' formula, exact equivalence before quantization
(X·diag(s)⁻¹ · diag(s)·W = X·W), folding into RMSNorm, and W8A8 quality with outliers."""
import pytest
import torch
from torch import nn

from optimizers.quant.calibrate import channel_absmax
from optimizers.quant.modules import QuantLinearInt8, default_predicate, find_linears, replace_linears
from optimizers.quant.smooth import migrate, smooth_model, smoothing_factors
from optimizers.quant.testing import logits, rel_err, tiny_lm_workload


def test_factors_are_the_papers_formula():
    a = torch.tensor([1.0, 16.0, 0.25])
    w = torch.tensor([4.0, 1.0, 0.5])
    s = smoothing_factors(a, w, 0.5)
    assert torch.allclose(s, torch.tensor([0.5, 4.0, 0.7071068]))  # sqrt(a)/sqrt(w)
    assert torch.allclose(smoothing_factors(a, w, 1.0), a) and torch.allclose(smoothing_factors(a, w, 0.0), 1 / w)
    with pytest.raises(ValueError, match="alpha=1.5 must be in"):
        smoothing_factors(a, w, 1.5)


def test_smoothing_preserves_the_product():
    x = torch.randn(16, 64)
    x[:, 5] *= 50
    W = torch.randn(32, 64)
    s = smoothing_factors(x.abs().amax(0), W.abs().amax(0), 0.5)
    smoothed = (x / s) @ (W * s).t()
    assert torch.allclose(smoothed, x @ W.t(), rtol=1e-4, atol=1e-3)
    # after smoothing the activation outlier channel is tamed: its max / median ratio drops
    ratio = lambda t: float(t.abs().amax(0).max() / t.abs().amax(0).median())  # noqa: E731
    assert ratio(x / s) < ratio(x) / 4


def test_folding_into_rmsnorm_keeps_the_model_function():
    wl = tiny_lm_workload(outliers=True)
    ref = logits(wl)
    model = wl.model
    names = list(find_linears(model, default_predicate(model)))
    pending, report = smooth_model(model, names, wl.calibration, alpha=0.5, smooth_unfoldable=True)
    folded = {r["group"][0]: r["folded_into"] for r in report}
    for i in (0, 1):
        p = f"model.layers.{i}."
        assert folded[p + "self_attn.q_proj"] == p + "input_layernorm"
        assert folded[p + "mlp.gate_proj"] == p + "post_attention_layernorm"
        assert folded[p + "mlp.down_proj"] == p + "mlp.up_proj"  # rows of up_proj; gate_proj fails the check (SiLU)
        assert folded[p + "self_attn.o_proj"] is None  # GQA: no producer of the right width
    # the unfoldable o_proj carries 1/s to its quantized module's input_scale
    assert sorted(pending) == [f"model.layers.{i}.self_attn.o_proj" for i in (0, 1)]
    for n, inv in pending.items():
        lin = model.get_submodule(n)
        model.get_submodule(n.rpartition(".")[0]).__setattr__(n.rpartition(".")[2], _Float(lin, inv))
    assert rel_err(ref, logits(wl)) < 1e-4  # float function unchanged; observed ~3e-7


class _Float(nn.Module):
    """Float Linear with an input scale: the smoothed layer before quantization."""

    def __init__(self, lin, inv):
        super().__init__()
        self.lin, self.inv = lin, inv

    def forward(self, x):
        return self.lin(x * self.inv)


def test_migrate_refuses_to_fold_when_the_norm_output_is_also_a_residual():
    class PostLN(nn.Module):  # y = LN(x); out = y + fc(y): the norm output feeds the residual too
        def __init__(self):
            super().__init__()
            self.norm, self.fc = nn.LayerNorm(16), nn.Linear(16, 16)

        def forward(self, x):
            y = self.norm(x)
            return y + self.fc(y)

    m = PostLN()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 16)
    ref = m(x)
    inv, into = migrate(m, ["fc"], ["norm"], torch.rand(16) + 0.5, check_batch=x)
    assert inv is not None and into is None  # not folded: caller keeps an explicit input scale
    assert torch.allclose(m.fc(m.norm(x) * inv) + m.norm(x), ref, atol=1e-5)


def test_smoothquant_beats_naive_w8a8_with_outliers():
    wl = tiny_lm_workload(outliers=True)
    ref = logits(wl)
    act = channel_absmax(wl.model, ["model.layers.0.self_attn.q_proj"], wl.calibration)
    assert act["model.layers.0.self_attn.q_proj"].max() > 20 * act["model.layers.0.self_attn.q_proj"].median()

    import copy

    naive = copy.deepcopy(wl.model)
    replace_linears(naive, default_predicate(naive), lambda n, l: QuantLinearInt8.from_linear(l, act_int8=True))
    from optimizers import registry

    t = registry.get("smoothquant")
    smooth = t.apply(wl, t.config({"alpha": 0.5})).workload
    e_naive, e_smooth = rel_err(ref, logits(wl.with_model(naive))), rel_err(ref, logits(smooth))
    assert e_smooth < 0.6 * e_naive  # observed 0.044 vs 0.099
