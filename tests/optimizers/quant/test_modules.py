"""Primitives against hand math: int8 per-channel and group-wise int2/3/4 round trips,
the quantized Linear forwards against F.linear on the dequantized weight, true bytes,
the swap helper and the error messages."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quant import packing
from optimizers.quant.modules import (QuantLinearInt4, QuantLinearInt8, check_group_size, default_predicate,
                                      dequantize_groupwise, int8_matmul, quantize_groupwise, quantize_per_token_int8,
                                      replace_linears, sqnr_db)
from optimizers.measure import stored_bytes

SHAPES = [(1, 32, 64), (3, 96, 160), (5, 17, 96)]  # (tokens, out, in): odd counts on purpose


@pytest.mark.parametrize("n,k", [(17, 64), (96, 160)])
def test_int8_per_channel_round_trip_within_half_step(n, k):
    w = torch.randn(n, k) * torch.rand(n, 1) * 3
    q, s = packing.quantize_int8_per_channel(w)
    err = (packing.dequantize_int8_per_channel(q, s) - w).abs()
    assert (err <= s[:, None] / 2 + 1e-7).all()  # RTN: at most half a step
    assert torch.allclose(s, w.abs().amax(1) / 127)
    assert sqnr_db(w, packing.dequantize_int8_per_channel(q, s)) > 40  # observed 43.5


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("symmetric", [False, True])
def test_groupwise_round_trip_within_half_step(bits, symmetric):
    torch.manual_seed(bits)
    w = torch.randn(24, 128)
    codes, scale, zero = quantize_groupwise(w, bits, 32, symmetric)
    assert codes.max() <= 2**bits - 1 and scale.shape == (24, 4)
    deq = dequantize_groupwise(codes, scale, zero, 32)
    step = scale.repeat_interleave(32, dim=1)
    if symmetric:  # amax maps to the top code: no clipping
        assert ((deq - w).abs() <= step / 2 + 1e-6).all()
    else:  # asymmetric min/max range also holds every value up to rounding of the zero point
        assert ((deq - w).abs() <= step + 1e-6).all()
    # hand check of one group: asymmetric 4-bit, scale=(max-min)/15, zero=round(-min/scale)
    if bits == 4 and not symmetric:
        g = w[0, :32]
        s = ((g.max().clamp(min=0) - g.min().clamp(max=0)) / 15).half().float()
        assert torch.isclose(scale[0, 0], s)
        assert zero[0, 0] == torch.round(-g.min() / s)


def test_int4_stored_layout_matches_packing_py():
    w = torch.randn(8, 64)
    codes, scale, zero = quantize_groupwise(w, 4, 32)
    m = QuantLinearInt4.from_codes(codes, scale, zero, 32)
    assert m.packed.dtype == torch.uint8 and m.packed.shape == (8, 32)
    assert torch.equal(packing.unpack_int4(m.packed), codes)
    assert torch.equal(m.dequantized_weight(), packing.dequantize_int4_groupwise(m.packed, scale, zero, 32))


@pytest.mark.parametrize("t,n,k", SHAPES)
def test_quant_linear_int8_forward_equals_dequantized_matmul(t, n, k):
    lin = nn.Linear(k, n)
    q = QuantLinearInt8.from_linear(lin)
    x = torch.randn(2, t, k)
    ref = F.linear(x, q.dequantized_weight(), lin.bias)
    assert torch.allclose(q(x), ref, atol=1e-5)
    assert sqnr_db(lin(x), q(x)) > 35  # observed 47.9 (nn.Linear init weights)


@pytest.mark.parametrize("t,n,k", SHAPES)
def test_w8a8_forward_matches_hand_math(t, n, k):
    lin = nn.Linear(k, n)
    q = QuantLinearInt8.from_linear(lin, act_int8=True)
    x = torch.randn(t, k)
    xq, xs = quantize_per_token_int8(x)
    ref = (xq.float() @ q.qweight.float().t()) * xs * q.scale + lin.bias
    assert torch.allclose(q(x), ref, atol=1e-4)
    assert sqnr_db(lin(x), q(x)) > 30  # observed 42.0


def test_int8_matmul_is_exact():
    a = torch.randint(-127, 128, (33, 96), dtype=torch.int8)
    b = torch.randint(-127, 128, (96, 40), dtype=torch.int8)
    assert torch.equal(int8_matmul(a, b), (a.long() @ b.long()).float())


@pytest.mark.parametrize("t,n,k", [(1, 32, 64), (3, 96, 160)])
def test_quant_linear_int4_forward(t, n, k):
    lin = nn.Linear(k, n)
    q = QuantLinearInt4.from_linear(lin, group_size=32)
    x = torch.randn(t, k)
    assert torch.allclose(q(x), F.linear(x, q.dequantized_weight(), lin.bias), atol=1e-5)
    assert sqnr_db(lin(x), q(x)) > 18  # observed 23.8 for 4-bit g32 on nn.Linear init weights


def test_input_scale_is_applied_before_the_matmul():
    lin = nn.Linear(64, 8, bias=False)
    s = torch.rand(64) + 0.5
    q = QuantLinearInt8.from_linear(lin, weight=lin.weight * s)  # W·diag(s)
    q.set_input_scale(1 / s)
    x = torch.randn(4, 64)
    assert sqnr_db(lin(x), q(x)) > 35
    assert "input_scale" in dict(q.named_buffers())


def test_stored_bytes_are_true():
    lin = nn.Linear(256, 64)
    q8, q4 = QuantLinearInt8.from_linear(lin), QuantLinearInt4.from_linear(lin, group_size=128)
    assert stored_bytes(q8) == 64 * 256 + 64 * 4 + 64 * 4  # int8 W + fp32 scale + fp32 bias
    # uint8 codes (2 a byte) + fp16 scale + uint8 zero per group + fp32 bias
    assert stored_bytes(q4) == 64 * 128 + 64 * 2 * 2 + 64 * 2 + 64 * 4
    assert (stored_bytes(q4) - 256) / (64 * 256 * 2) <= 0.30  # int4 g128 vs fp16: 0.262


def test_replace_linears_skips_lm_head_by_default():
    from optimizers.workloads.tiny_llama import build_tiny_llama

    model = build_tiny_llama()
    swapped = replace_linears(model, default_predicate(model), lambda n, l: QuantLinearInt8.from_linear(l))
    assert "lm_head" not in swapped and len(swapped) == 14  # 2 layers × (q k v o gate up down)
    assert type(model.lm_head) is nn.Linear
    model2 = build_tiny_llama()
    assert "lm_head" in replace_linears(model2, default_predicate(model2, include_lm_head=True),
                                        lambda n, l: QuantLinearInt8.from_linear(l))


def test_group_size_error_names_the_param_and_a_valid_choice():
    lins = {"a": nn.Linear(352, 8), "b": nn.Linear(128, 8)}
    with pytest.raises(ValueError, match=r"group_size=128 .*in_features=352.*valid choices here: \[32, 16, 8\]"):
        check_group_size(lins, 128)
    check_group_size(lins, 32)


def test_unsupported_bits_error():
    with pytest.raises(ValueError, match=r"bits=5 is not supported; choose one of \[2, 3, 4\]"):
        quantize_groupwise(torch.randn(4, 32), 5, 32)


def test_unset_group_size_picks_the_largest_that_divides_every_layer():
    from optimizers.quant.modules import check_group_size

    lin = lambda k: torch.nn.Linear(k, 8)  # noqa: E731
    assert check_group_size({"a": lin(1536), "b": lin(512)}, None) == 128
    assert check_group_size({"q": lin(576), "down": lin(1536)}, None) == 64  # smollm2-135m: 576 = 4.5 × 128
    assert check_group_size({"a": lin(96)}, None) == 32
    assert check_group_size({"a": lin(576)}, 32) == 32
    with pytest.raises(ValueError, match=r"group_size=128 must divide.*valid choices here: \[64, 32"):
        check_group_size({"q": lin(576)}, 128)
    with pytest.raises(ValueError, match="group_size=32 must divide"):
        check_group_size({"a": lin(100)}, None)


def test_int4_steps_say_when_fp32_activations_miss_the_packed_cpu_kernel():
    from optimizers.quant.modules import cpu_int4_path_note

    lin = torch.nn.Sequential(torch.nn.Linear(64, 64))
    assert "dequantizing path" in cpu_int4_path_note(lin, "cpu")[0]
    assert cpu_int4_path_note(lin.to(torch.bfloat16), "cpu") == []
    assert cpu_int4_path_note(lin, "cuda") == []
