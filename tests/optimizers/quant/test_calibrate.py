"""Calibration capture against hand math: per-channel maxima, the GPTQ Hessian 2XᵀX/n,
grouping of Linears that share an input and their norm, block grouping."""
import pytest
import torch
from torch import nn

from optimizers.quant.calibrate import (BlockFeed, blocks, channel_absmax, collect_hessians, collect_inputs,
                                        require_calibration, sequential, shared_input_groups)
from optimizers.quant.modules import default_predicate, find_linears
from optimizers.quant.testing import tiny_lm_workload


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_absmax_inputs_and_hessian_hand_math():
    m = Two()
    batches = [torch.randn(2, 5, 8) for _ in range(3)]
    X = torch.cat([b.reshape(-1, 8) for b in batches])  # (30, 8)
    Xb = torch.relu(m.a(X)).detach()
    assert torch.allclose(channel_absmax(m, ["a"], batches)["a"], X.abs().amax(0))
    got = collect_inputs(m, ["a", "b"], batches)
    assert torch.allclose(got["a"], X) and torch.allclose(got["b"], Xb, atol=1e-6)
    assert collect_inputs(m, ["a"], batches, max_tokens=7)["a"].shape == (7, 8)
    H = collect_hessians(m, ["a", "b"], batches)
    assert torch.allclose(H["a"], 2 * X.t() @ X / 30, atol=1e-5)
    assert torch.allclose(H["b"], 2 * Xb.t() @ Xb / 30, atol=1e-5)


def test_shared_input_groups_on_llama():
    wl = tiny_lm_workload()
    names = list(find_linears(wl.model, default_predicate(wl.model)))
    groups = {tuple(g): norm for g, norm in shared_input_groups(wl.model, names, wl.calibration[0])}
    p = "model.layers.0."
    assert groups[(p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj")] == p + "input_layernorm"
    assert groups[(p + "mlp.gate_proj", p + "mlp.up_proj")] == p + "post_attention_layernorm"
    assert groups[(p + "self_attn.o_proj",)] is None and groups[(p + "mlp.down_proj",)] is None
    assert len(groups) == 8


def test_blocks_follow_the_layer_list():
    wl = tiny_lm_workload()
    names = list(find_linears(wl.model, default_predicate(wl.model, include_lm_head=True)))
    bl = blocks(wl.model, names)
    assert [len(g) for _, g in bl] == [7, 7, 1] and bl[0][0] is wl.model.model.layers[0]
    assert bl[-1] == (None, ["lm_head"])


@pytest.mark.parametrize("skip_block", [None, 0])
def test_sequential_feed_equals_full_forwards_of_the_partly_quantized_model(skip_block):
    """The block-input cache (one forward per block per batch) must hand every block exactly
    what a full forward of the model — earlier blocks already replaced — would: checked by
    quantizing each block as it is handed out and comparing Hessians both ways. With block 0
    unselected, the cache starts at block 1 and block 0 is never quantized."""
    from optimizers.quant.modules import QuantLinearInt4, set_module

    wl = tiny_lm_workload()
    model = wl.model
    names = list(find_linears(model, default_predicate(model, include_lm_head=True)))
    if skip_block is not None:
        names = [n for n in names if not n.startswith(f"model.layers.{skip_block}.")]
    seen = []
    for group, feed in sequential(model, names, wl.calibration):
        assert isinstance(feed, BlockFeed) == (group != ["lm_head"])
        fast = collect_hessians(model, group, feed)
        slow = collect_hessians(model, group, wl.calibration)
        for n in group:
            assert torch.allclose(fast[n], slow[n], rtol=1e-4, atol=1e-5), n
            lin = model.get_submodule(n)
            set_module(model, n, QuantLinearInt4.from_linear(lin, group_size=32))
        seen += group
    assert seen == names


def test_missing_calibration_is_a_clear_error():
    with pytest.raises(ValueError, match="gptq needs calibration data.*calibration"):
        require_calibration([], "gptq")


def test_padding_positions_are_dropped():
    m = Two()

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = m

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids)

    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = collect_inputs(Wrap(), ["inner.a"], [{"input_ids": x, "attention_mask": mask}])["inner.a"]
    assert torch.allclose(got, x[mask.bool()])  # 8 real tokens of 10
