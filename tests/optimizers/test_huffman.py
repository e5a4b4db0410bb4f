"""The canonical Huffman coder: code lengths are Huffman's (heap merge), codes are canonical and
prefix-free, encode matches a bit-string reference bit for bit, decode inverts encode exactly on
random and skewed data at any block size, the average code length lies in [H, H + 1), and the
edge cases (one distinct symbol, no symbols, bad input) behave."""
from __future__ import annotations

import pytest
import torch

from optimizers import huffman as H


def _reference_bits(symbols: list[int], lengths: list[int], block: int) -> str:
    """Each block's codes as a '0'/'1' string, padded with zeros to a whole byte."""
    codes = H.canonical_codes(lengths)
    out = ""
    for b in range(0, len(symbols), block):
        bits = "".join(format(codes[s], f"0{lengths[s]}b") for s in symbols[b:b + block])
        out += bits + "0" * (-len(bits) % 8)
    return out


def _stream_bits(h: H.HuffmanStream) -> str:
    return "".join(format(b, "08b") for b in h.stream.tolist())


def _skewed(n: int, alphabet: int, seed: int) -> torch.Tensor:
    p = torch.tensor([0.6 ** i for i in range(alphabet)])
    return torch.multinomial(p / p.sum(), n, replacement=True, generator=torch.Generator().manual_seed(seed))


def test_code_lengths_are_huffmans():
    assert H.code_lengths([5, 9, 12, 13, 16, 45]) == [4, 4, 3, 3, 3, 1]  # CLRS fig. 16.5: total cost 224
    assert H.code_lengths([1, 1, 2, 4, 8]) == [4, 4, 3, 2, 1]
    assert H.code_lengths([0, 3, 0, 3]) == [0, 1, 0, 1]
    assert H.code_lengths([0, 7, 0]) == [0, 1, 0]  # a lone symbol still takes one bit


def test_canonical_codes_are_prefix_free_and_ordered():
    lengths = H.code_lengths(torch.bincount(_skewed(5000, 40, 0), minlength=40).tolist())
    codes = H.canonical_codes(lengths)
    words = [format(codes[s], f"0{lengths[s]}b") for s in range(40) if lengths[s]]
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    assert sum(2.0 ** -len(w) for w in words) == 1.0  # Kraft equality: a complete code
    ranked = sorted((s for s in range(40) if lengths[s]), key=lambda s: (lengths[s], s))
    assert [codes[s] << (max(lengths) - lengths[s]) for s in ranked] == sorted(
        codes[s] << (max(lengths) - lengths[s]) for s in ranked)


@pytest.mark.parametrize("alphabet", [2, 3, 17, 256])
@pytest.mark.parametrize("block", [64, 1000, 4096])
@pytest.mark.parametrize("kind", ["uniform", "skewed"])
def test_round_trip_is_bit_exact(alphabet, block, kind):
    n = 3001
    g = torch.Generator().manual_seed(alphabet + block)
    x = torch.randint(0, alphabet, (n,), generator=g) if kind == "uniform" else _skewed(n, alphabet, block)
    h = H.encode(x.to(torch.uint8), alphabet, block)
    assert torch.equal(H.decode(h), x)
    assert _stream_bits(h) == _reference_bits(x.tolist(), h.lengths.tolist(), block)  # the stream, bit for bit
    assert h.offsets.dtype == torch.int32 and h.offsets.numel() == -(-n // block)


def test_long_codes_round_trip():
    """Counts 1, 1, 2, 4, 8, … give the deepest tree a count allows (here 18-bit codes, past 16)."""
    counts = [1] + [2 ** i for i in range(18)]
    x = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    x = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))]
    h = H.encode(x, len(counts), block_size=4096)
    assert int(h.lengths.max()) == 18
    assert torch.equal(H.decode(h), x)


@pytest.mark.parametrize("seed", range(4))
def test_average_length_is_within_a_bit_of_the_entropy(seed):
    x = _skewed(20000, 32, seed)
    counts = torch.bincount(x, minlength=32).tolist()
    h = H.encode(x, 32, block_size=20000)
    avg = sum(c * n for c, n in zip(counts, h.lengths.tolist())) / x.numel()
    ent = H.entropy_bits(counts)
    assert ent <= avg < ent + 1  # observed H 2.16, L 2.20 bits
    assert h.stream.numel() == -(-int(avg * x.numel()) // 8)  # one block: the stream is the codes, byte-padded


def test_one_distinct_symbol_and_empty_input():
    h = H.encode(torch.full((100,), 7), 16)
    assert h.lengths.tolist() == [0] * 7 + [1] + [0] * 8 and h.stream.numel() == 13  # one bit each, padded
    assert torch.equal(H.decode(h), torch.full((100,), 7))
    e = H.encode(torch.zeros(0, dtype=torch.long), 16)
    assert e.stream.numel() == 0 and e.offsets.numel() == 0 and e.count == 0 and int(e.lengths.sum()) == 0
    assert H.decode(e).numel() == 0
    assert H.entropy_bits([]) == 0.0 and H.entropy_bits([5]) == 0.0


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="symbols must lie in 0..3"):
        H.encode(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="alphabet=300"):
        H.encode(torch.tensor([0]), 300)
    with pytest.raises(ValueError, match="block_size=0"):
        H.encode(torch.tensor([0]), 4, block_size=0)
