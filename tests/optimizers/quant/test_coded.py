"""The coded-weight storage behind weight_sharing, huffman_coding, ternary_weights and
binary_weights: 1–8-bit packing round-trips (4-bit is pack_int4's layout), a coded Linear/Conv2d
computes F.linear/F.conv2d with its dequantized weight, its stored bytes are exactly the packed
codes + levels + scales + bias, and the Huffman form stores less, decodes lazily into a
non-persistent cache and computes the same outputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optimizers.measure import stored_bytes
from optimizers.quant import coded as C
from quant import packing


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("k", [1, 7, 8, 13, 64])
def test_pack_bits_round_trips(bits, k):
    g = torch.Generator().manual_seed(bits * 100 + k)
    codes = torch.randint(0, 2**bits, (3, k), generator=g, dtype=torch.uint8)
    packed = packing.pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (3, -(-k * bits // 8))
    assert torch.equal(packing.unpack_bits(packed, bits, k), codes)


def test_pack_bits_layouts():
    c = torch.randint(0, 16, (4, 10), dtype=torch.uint8)
    assert torch.equal(packing.pack_bits(c, 4), c[:, 0::2] | (c[:, 1::2] << 4))  # pack_int4's layout
    assert packing.pack_bits(torch.tensor([1, 2, 0, 3], dtype=torch.uint8), 2).tolist() == [0b11001001]
    assert packing.pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.uint8), 1).tolist() == [0x81, 1]
    with pytest.raises(ValueError, match="bits=9"):
        packing.pack_bits(c, 9)
    with pytest.raises(ValueError, match="need 2 bytes"):
        packing.unpack_bits(torch.zeros(1, dtype=torch.uint8), 5, 3)


def _codes(shape, bits, zero_code, per_channel, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_levels = 2**bits - int(zero_code)
    codes = torch.randint(0, 2**bits, shape, generator=g).to(torch.uint8)
    scale = torch.rand(shape[0] if per_channel else 1, generator=g).half().float() + 0.5
    return C.Codes(codes, torch.randn(n_levels, generator=g), scale, bits, zero_code)


@pytest.mark.parametrize("zero_code", [False, True])
def test_coded_linear_and_conv_compute_with_their_dequantized_weight(zero_code):
    torch.manual_seed(0)
    lin, conv = nn.Linear(24, 10), nn.Conv2d(6, 12, 3, stride=2, padding=1, groups=3)
    cl = C.CodedWeight.from_layer(lin, _codes((10, 24), 3, zero_code, True))
    cc = C.CodedWeight.from_layer(conv, _codes((12, 2, 3, 3), 5, zero_code, False))
    x, img = torch.randn(4, 24), torch.randn(2, 6, 9, 9)
    assert torch.equal(cl(x), F.linear(x, cl.dequantized_weight(), lin.bias))
    assert torch.equal(cc(img), F.conv2d(img, cc.dequantized_weight(), conv.bias, 2, 1, 1, 3))
    w = cl.dequantized_weight()
    if zero_code:
        assert torch.all(w[cl.codes() == 0] == 0)  # the reserved code is an exact zero
    # stored: packed codes + fp32 levels + fp16 scales + the bias, nothing else
    assert stored_bytes(cl) == -(-240 * 3 // 8) + 4 * cl.levels.numel() + 2 * 10 + 4 * 10
    assert stored_bytes(cc) == -(-216 * 5 // 8) + 4 * cc.levels.numel() + 2 * 1 + 4 * 12
    assert set(cl.state_dict()) == {"levels", "scale", "bias", "packed"}


def test_huffman_form_stores_less_decodes_lazily_and_computes_the_same():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    c = _codes((16, 8, 3, 3), 5, True, False)
    c.codes = torch.where(torch.rand(c.codes.shape) < 0.7, 0, c.codes).to(torch.uint8)  # mostly pruned: skewed codes
    plain = C.CodedWeight.from_layer(conv, c, train_levels=True)
    h = C.HuffmanCodedWeight.from_coded(plain, block_size=256)
    assert h.decoded is None and C.weight_bytes(h) < 0.75 * C.weight_bytes(plain)  # observed 0.56
    assert set(h.state_dict()) == {"levels", "scale", "bias", "stream", "block_offsets", "code_lengths"}
    x = torch.randn(2, 8, 6, 6)
    with torch.inference_mode():
        y = h(x)
    assert torch.equal(y, plain(x)) and torch.equal(h.decoded, plain.codes())
    assert "decoded" not in h.state_dict() and stored_bytes(h) == C.weight_bytes(h) + 4 * 16  # the cache is not stored
    assert not h.decoded.is_inference() and isinstance(h.levels, nn.Parameter)  # a later fine-tune can train it


def test_selection_takes_linears_and_zero_padded_convs_and_keeps_first_last_apart():
    from optimizers.workloads.digits_cnn import DigitsCNN

    model = DigitsCNN(widths=(8, 16, 16, 16))
    model.blocks[0][0].padding_mode = "reflect"
    names = [n for n, _ in C.coded_layers(model)]
    assert "blocks.0.0" not in names and names[0] == "stem.0" and names[-1] == "classifier" and len(names) == 7
    inner = [n for n, _ in C.without_first_last(model, C.coded_layers(model))]
    assert inner == names[1:-1]
    with pytest.raises(ValueError, match="nn.Linear and nn.Conv2d layers and this model has none"):
        C.require_layers([], "weight_sharing")
