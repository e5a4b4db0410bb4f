"""Canonical Huffman coding of small-alphabet integer codes (≤ 256 symbols), the last stage of
Deep Compression (Han, Mao & Dally, ICLR 2016, §4): code lengths from a heap of symbol counts
(Huffman 1952), canonical codes from the lengths alone (the table stored is one length per
symbol, as DEFLATE stores it), bits packed MSB-first into uint8 blocks of ``block_size`` symbols
that each start on a byte, so both directions run vectorized: encode by expanding every symbol's
bits, decode all blocks in lockstep, each step reading a window of the longest code's width and
finding its length by ``searchsorted`` against the canonical limits."""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

import torch

WINDOW_BYTES = 7  # a decode step reads 56 bits: any code up to MAX_LENGTH at any bit offset fits
MAX_LENGTH = 8 * WINDOW_BYTES - 7  # 49 bits; a layer of < 2^31 codes never needs more than ~45
ENCODE_CHUNK = 1 << 20  # symbols expanded to bits at once while encoding


@dataclass
class HuffmanStream:
    """One coded sequence: ``stream`` uint8 bytes, ``offsets`` int32 (blocks,) byte offset of each
    block, ``lengths`` uint8 (alphabet,) code length per symbol (0: absent); ``count`` symbols."""

    stream: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor
    count: int
    block_size: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.stream, self.offsets, self.lengths))


def code_lengths(counts: list[int]) -> list[int]:
    """Huffman code length of each symbol from its count (0 for a count of 0): merge the two
    lightest subtrees until one is left; every merge deepens the symbols below it by one. A lone
    symbol gets length 1 (one bit each, as DEFLATE does: a code needs at least one bit)."""
    heap = [(c, s, [s]) for s, c in enumerate(counts) if c > 0]  # (weight, tie-break, symbols below)
    lengths = [0] * len(counts)
    if len(heap) == 1:
        lengths[heap[0][1]] = 1
        return lengths
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, t1, s1 = heapq.heappop(heap)
        c2, t2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
    return lengths


def canonical_codes(lengths: list[int]) -> list[int]:
    """The canonical code of each symbol (0 where absent): symbols ordered by (length, symbol)
    take consecutive values, shifted left whenever the length grows (RFC 1951 §3.2.2)."""
    codes, code, prev = [0] * len(lengths), 0, 0
    for s in sorted((s for s, n in enumerate(lengths) if n), key=lambda s: (lengths[s], s)):
        code <<= lengths[s] - prev
        codes[s], prev = code, lengths[s]
        code += 1
    return codes


def entropy_bits(counts: list[int]) -> float:
    """Shannon entropy H of the empirical distribution, bits per symbol (Huffman: H ≤ L < H + 1)."""
    n = sum(counts)
    return -sum(c / n * math.log2(c / n) for c in counts if c) if n else 0.0


def encode(symbols: torch.Tensor, alphabet: int = 256, block_size: int = 1024) -> HuffmanStream:
    """Huffman-code a tensor of integer symbols in 0..alphabet − 1 (flattened) on its own device."""
    if not 1 <= alphabet <= 256:
        raise ValueError(f"alphabet={alphabet}: the coder stores one uint8 length per symbol, 1..256 symbols")
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be ≥ 1 symbols")
    dev = symbols.device
    sym = symbols.reshape(-1).long()
    if sym.numel() and (int(sym.min()) < 0 or int(sym.max()) >= alphabet):
        raise ValueError(f"symbols must lie in 0..{alphabet - 1}; got {int(sym.min())}..{int(sym.max())}")
    lengths = code_lengths(torch.bincount(sym, minlength=alphabet).tolist())
    if max(lengths, default=0) > MAX_LENGTH:
        raise ValueError(f"a code of {max(lengths)} bits exceeds the decoder's {MAX_LENGTH}: code fewer symbols at once")
    code_t = torch.tensor(canonical_codes(lengths), dtype=torch.int64, device=dev)
    len_t = torch.tensor(lengths, dtype=torch.int64, device=dev)
    chunk = max(block_size, ENCODE_CHUNK // block_size * block_size)  # whole blocks: each starts on a byte
    parts, sizes = [], []
    for start in range(0, sym.numel(), chunk):
        data, block_bytes = _encode_blocks(sym[start:start + chunk], code_t, len_t, block_size)
        parts.append(data)
        sizes.append(block_bytes)
    sizes_t = torch.cat(sizes) if sizes else torch.zeros(0, dtype=torch.int64, device=dev)
    offsets = torch.cumsum(sizes_t, 0) - sizes_t
    stream = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8, device=dev)
    if stream.numel() >= 2**31:
        raise ValueError(f"{stream.numel()} bytes overflow the int32 block offsets: code the layer in parts")
    return HuffmanStream(stream, offsets.to(torch.int32), torch.tensor(lengths, dtype=torch.uint8, device=dev),
                         int(sym.numel()), block_size)


def _encode_blocks(sym: torch.Tensor, code: torch.Tensor, length: torch.Tensor, block: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole blocks of ``sym`` → (their bytes, each block's byte count)."""
    n, dev = sym.numel(), sym.device
    ln = length[sym]  # (n,) bits of each symbol
    blk = torch.arange(n, device=dev) // block
    bits_per_block = torch.zeros(int(blk[-1]) + 1, dtype=torch.int64, device=dev).index_add_(0, blk, ln)
    block_bytes = (bits_per_block + 7) // 8
    block_start = (torch.cumsum(block_bytes, 0) - block_bytes) * 8  # bit where each block starts
    within = torch.cumsum(ln, 0) - ln  # (n,) bit offset from the chunk's start, without padding
    first = within[torch.arange(0, n, block, device=dev)]  # each block's unpadded start
    start = block_start[blk] + within - first[blk]  # (n,) first bit of each symbol in the stream
    owner = torch.repeat_interleave(torch.arange(n, device=dev), ln)  # (bits,) the symbol each bit belongs to
    j = torch.arange(owner.numel(), device=dev) - (within[owner])  # bit index inside its code, 0 = MSB
    bit = (code[sym][owner] >> (ln[owner] - 1 - j)) & 1
    out = torch.zeros(int(block_bytes.sum()) * 8, dtype=torch.uint8, device=dev)
    out[start[owner] + j] = bit.to(torch.uint8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=dev)  # MSB first
    return (out.reshape(-1, 8) * weights).sum(-1, dtype=torch.uint8), block_bytes


def decode(h: HuffmanStream) -> torch.Tensor:
    """The symbols ``encode`` coded, int64 (count,), on the stream's device. Each step decodes one
    symbol of every block: read ``L`` bits (the longest code) at the block's bit pointer; the
    code's length is the first canonical length whose left-justified limit exceeds them."""
    dev, n = h.stream.device, h.count
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=dev)
    lengths = h.lengths.long().tolist()
    top = max(lengths)
    per_len = [0] * (top + 1)
    for s_len in lengths:
        if s_len:
            per_len[s_len] += 1
    limits, firsts, code = [], [], 0  # per length 1..top: first canonical code and left-justified end
    for ln in range(1, top + 1):
        firsts.append(code)
        code += per_len[ln]
        limits.append(code << (top - ln))
        code <<= 1
    order = sorted((s for s, ln in enumerate(lengths) if ln), key=lambda s: (lengths[s], s))
    start_rank = torch.tensor(list(itertools.accumulate(per_len[1:-1], initial=0)), dtype=torch.int64,
                              device=dev)  # rank (in ``order``) of each length's first symbol
    limits_t = torch.tensor(limits, dtype=torch.int64, device=dev)
    firsts_t = torch.tensor(firsts, dtype=torch.int64, device=dev)
    order_t = torch.tensor(order, dtype=torch.int64, device=dev)
    stream = torch.cat([h.stream, torch.zeros(WINDOW_BYTES, dtype=torch.uint8, device=dev)]).long()
    last_byte = stream.numel() - WINDOW_BYTES
    shifts = torch.arange(8 * (WINDOW_BYTES - 1), -1, -8, dtype=torch.int64, device=dev)  # (7,) big-endian
    span = torch.arange(WINDOW_BYTES, device=dev)
    blocks = h.offsets.numel()
    base = h.offsets.long()  # (blocks,) byte where each block starts
    pos = torch.zeros(blocks, dtype=torch.int64, device=dev)  # bit pointer inside each block
    out = torch.empty(blocks, h.block_size, dtype=torch.int64, device=dev)
    mask = (1 << top) - 1
    for t in range(min(h.block_size, n)):
        byte = (base + (pos >> 3)).clamp(max=last_byte)  # the last block may run past its end: clamp, cut later
        v = (stream[byte[:, None] + span] << shifts).sum(-1)  # (blocks,) 56 bits from that byte on
        window = (v >> (8 * WINDOW_BYTES - top - (pos & 7))) & mask  # the next `top` bits
        li = torch.searchsorted(limits_t, window, right=True).clamp_(max=top - 1)  # (blocks,) code length − 1
        ln = li + 1
        out[:, t] = order_t[(start_rank[li] + (window >> (top - ln)) - firsts_t[li]).clamp(0, len(order) - 1)]
        pos += ln
    return out.reshape(-1)[:n]
