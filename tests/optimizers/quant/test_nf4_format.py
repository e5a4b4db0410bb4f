"""NF4 (QLoRA): the published code book, nearest-code rounding, block-wise absmax,
double quantization of the absmax constants, true bytes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optimizers.measure import stored_bytes
from optimizers.quant.modules import sqnr_db
from optimizers.quant.nf4 import (NF4_CODE, QuantLinearNF4, dequantize_nf4, double_dequantize, double_quantize,
                                  quantize_nf4)

# QLoRA Appendix E / bitsandbytes `create_normal_map`, as published
PUBLISHED = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
             -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
             0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]


def test_code_book_is_the_published_table():
    assert NF4_CODE.tolist() == pytest.approx(PUBLISHED, abs=0, rel=0)
    assert len(NF4_CODE) == 16 and NF4_CODE[7] == 0.0 and (NF4_CODE.diff() > 0).all()


def test_rounding_picks_the_nearest_code():
    w = torch.randn(64 * 20)
    codes, absmax = quantize_nf4(w, 64)
    x = (w.reshape(-1, 64) / absmax[:, None]).reshape(-1)
    nearest = (x[:, None] - NF4_CODE[None, :]).abs().argmin(dim=1)
    assert torch.equal(codes.long(), nearest)
    assert torch.allclose(absmax, w.reshape(-1, 64).abs().amax(1))
    # each block's absmax element is represented exactly (code ±1)
    deq = dequantize_nf4(codes, absmax, 64).reshape(-1, 64)
    i = w.reshape(-1, 64).abs().argmax(1)
    assert torch.allclose(deq.gather(1, i[:, None]), w.reshape(-1, 64).gather(1, i[:, None]))


def test_round_trip_error_is_below_half_the_widest_code_gap():
    w = torch.randn(64 * 100)
    codes, absmax = quantize_nf4(w, 64)
    err = (dequantize_nf4(codes, absmax, 64) - w).abs().reshape(-1, 64)
    gap = float(NF4_CODE.diff().max()) / 2  # 0.1519
    assert (err <= gap * absmax[:, None] + 1e-6).all()
    assert sqnr_db(w, dequantize_nf4(codes, absmax, 64)) > 18  # observed 20.6 on N(0,1)


def test_double_quantization_of_absmax():
    absmax = torch.rand(1000) * 0.2 + 0.05
    q, scale, mean = double_quantize(absmax, 256)
    assert q.dtype == torch.int8 and scale.shape == (4,)  # ceil(1000/256) second-level scales
    assert torch.isclose(mean, absmax.mean())
    back = double_dequantize(q, scale, mean, 256)
    blockmax = torch.nn.functional.pad(absmax - mean, (0, 24)).reshape(4, 256).abs().amax(1)
    bound = (blockmax / 127 / 2).repeat_interleave(256)[:1000]
    assert ((back - absmax).abs() <= bound + 1e-7).all()


@pytest.mark.parametrize("double_quant", [True, False])
def test_linear_nf4_forward_and_bytes(double_quant):
    lin = nn.Linear(256, 96)
    q = QuantLinearNF4.from_linear(lin, double_quant=double_quant)
    x = torch.randn(5, 256)
    assert torch.allclose(q(x), F.linear(x, q.dequantized_weight(), lin.bias), atol=1e-5)
    assert sqnr_db(lin(x), q(x)) > 17  # observed 20.4 (uniform init weights)
    n = 96 * 256
    blocks = n // 64
    absmax_bytes = blocks + 4 * ((blocks + 255) // 256) + 4 if double_quant else 4 * blocks
    assert stored_bytes(q) == n // 2 + absmax_bytes + 96 * 4
    if double_quant:  # QLoRA: 4 + 8/64 + 32/(64·256) bits a weight
        assert (stored_bytes(q) - 96 * 4) * 8 / n == pytest.approx(4.127, abs=0.01)


def test_block_size_must_divide():
    with pytest.raises(ValueError, match="block_size=64 must divide"):
        quantize_nf4(torch.randn(100), 64)


def test_the_pair_table_dequantizes_exactly_like_code_by_code_lookup():
    from quant import packing

    torch.manual_seed(3)
    m = QuantLinearNF4(torch.randn(48, 128))
    codes = packing.unpack_int4(m.packed).reshape(-1)
    ref = dequantize_nf4(codes, m.block_absmax(), 64).reshape(48, 128)
    assert torch.equal(m.dequantized_weight(), ref)


def test_an_nf4_layer_gives_its_input_the_gradient_of_its_dequantized_weight():
    torch.manual_seed(4)
    m = QuantLinearNF4(torch.randn(32, 64))
    x = torch.randn(5, 64, requires_grad=True)
    m(x).pow(2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (x2 @ m.dequantized_weight().T).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
