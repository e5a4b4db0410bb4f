"""torchao peers for the side-by-side: same Linears quantized (lm_head kept), small error."""
import pytest

from optimizers.quant.peer import torchao_peer
from optimizers.quant.testing import logits, rel_err, tiny_lm_workload


@pytest.mark.parametrize("kind,bound", [("int8_weight_only", 0.03), ("int8_dynamic", 0.04)])
def test_torchao_peer(kind, bound):
    wl = tiny_lm_workload()
    out = torchao_peer(wl, kind)
    assert out.meta["peer"] == f"torchao:{kind}"
    import torch

    assert type(out.model.model.layers[0].mlp.up_proj.weight.data) is not torch.Tensor  # a torchao tensor subclass
    assert type(out.model.lm_head.weight.data) is torch.Tensor  # head untouched
    assert rel_err(logits(wl), logits(out)) < bound  # observed 0.0104 (weight-only), 0.0143 (dynamic)


def test_unknown_peer():
    with pytest.raises(ValueError, match="kind='int4' has no torchao peer here"):
        torchao_peer(tiny_lm_workload(), "int4")
