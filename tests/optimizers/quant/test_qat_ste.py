"""QAT primitives: the straight-through estimator's value and gradient, the fake-quant
Linear's forward equals the converted module's, and a bounded fine-tune lowers the loss."""
import torch
from torch import nn

from optimizers.quant.modules import QuantLinearInt4, QuantLinearInt8
from optimizers.quant.qat import FakeQuantLinear, fake_quant_weight, ste, train_fake_quant


def test_ste_value_and_gradient():
    w = torch.randn(4, 8, requires_grad=True)
    wq = fake_quant_weight(w.detach(), 8, 8)
    y = ste(w, wq)
    assert torch.equal(y, wq)
    y.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_fake_quant_forward_equals_converted_module():
    lin = nn.Linear(64, 16)
    x = torch.randn(3, 64)
    f8 = FakeQuantLinear.from_linear(lin, 8, 32)
    assert torch.allclose(f8(x), QuantLinearInt8.from_linear(lin)(x), atol=1e-5)
    f4 = FakeQuantLinear.from_linear(lin, 4, 32)
    assert torch.allclose(f4(x), QuantLinearInt4.from_linear(lin, 32)(x), atol=1e-5)


def test_bounded_fine_tune_lowers_the_loss():
    from optimizers.quant.testing import tiny_lm_workload

    wl = tiny_lm_workload(n_calib=2)
    torch.manual_seed(0)
    import copy

    m = copy.deepcopy(wl.model)
    for n, lin in [(n, mod) for n, mod in m.named_modules() if type(mod) is nn.Linear and n != "lm_head"]:
        parent, _, child = n.rpartition(".")
        setattr(m.get_submodule(parent), child, FakeQuantLinear.from_linear(lin, 4, 32))
    losses = train_fake_quant(m, wl.model, wl.calibration, "causal_lm", steps=12, lr=3e-3)
    assert len(losses) == 12 and min(losses[-3:]) < losses[0]  # observed 6.21 → 3.98 (in-sample: the fine-tune fits 2 batches)
