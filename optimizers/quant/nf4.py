"""NormalFloat-4 (QLoRA, Dettmers et al. 2023, arXiv:2305.14314 §3): 16 code values at the
quantiles of N(0, 1) scaled to [-1, 1] (with an exact 0), block-wise absmax over 64 weights,
and double quantization: the fp32 absmax constants, mean-centred, to 8 bits in blocks of 256.
The code book is bitsandbytes' published table. The second-level quantizer here is
symmetric linear int8 (bitsandbytes uses its dynamic 8-bit map; same bytes, different grid)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from quant import packing
from optimizers.quant.modules import QuantLinearBase

# bitsandbytes functional.py / QLoRA Appendix E, in code order 0..15
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])


NF4_PAIRS = torch.stack([NF4_CODE[torch.arange(256) & 0x0F], NF4_CODE[torch.arange(256) >> 4]], dim=1)  # (256, 2)


def _check_block(numel: int, block: int, what: str) -> None:
    if block <= 0 or numel % block:
        raise ValueError(f"{what}={block} must divide the weight's element count {numel}; try 64 or 32")


def quantize_nf4(w: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened w → (codes uint8 (numel,) in 0..15, absmax float32 (numel/block,))."""
    _check_block(w.numel(), block_size, "block_size")
    wb = w.detach().float().reshape(-1, block_size)  # (B, 64)
    absmax = wb.abs().amax(dim=1).clamp(min=1e-12)  # (B,)
    x = wb / absmax[:, None]  # in [-1, 1]
    mids = (NF4_CODE[1:] + NF4_CODE[:-1]) / 2  # 15 decision boundaries
    codes = torch.bucketize(x, mids.to(x.device))  # nearest code
    return codes.reshape(-1).to(torch.uint8), absmax


def dequantize_nf4(codes: torch.Tensor, absmax: torch.Tensor, block_size: int = 64) -> torch.Tensor:
    vals = NF4_CODE.to(absmax.device)[codes.long()].reshape(-1, block_size)
    return (vals * absmax[:, None].float()).reshape(-1)


def double_quantize(absmax: torch.Tensor, block_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """absmax (B,) → (q int8 (B,), per-256-block scale float32 (ceil(B/256),), mean float32 ())."""
    mean = absmax.float().mean()
    c = absmax.float() - mean
    pad = (-c.numel()) % block_size
    cb = F.pad(c, (0, pad)).reshape(-1, block_size)
    scale = (cb.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.clamp(torch.round(cb / scale[:, None]), -127, 127).to(torch.int8).reshape(-1)[: c.numel()]
    return q, scale, mean


def double_dequantize(q: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor, block_size: int = 256) -> torch.Tensor:
    pad = (-q.numel()) % block_size
    qb = F.pad(q.float(), (0, pad)).reshape(-1, block_size)
    return (qb * scale[:, None]).reshape(-1)[: q.numel()] + mean


class _DequantLinear(torch.autograd.Function):
    """y = x·Wᵀ with W dequantized in forward and again in backward, so the graph keeps no
    dequantized weight per layer (QLoRA's frozen base costs its packed bytes only; bitsandbytes'
    4-bit matmul does the same). The base is frozen: only the input gets a gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "QuantLinearNF4") -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.dequantized_weight().to(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad @ ctx.layer.dequantized_weight().to(grad.dtype), None


class QuantLinearNF4(QuantLinearBase):
    """NF4 weights packed two codes per byte, double-quantized absmax; dequantized per call."""

    def __init__(self, weight: torch.Tensor, bias=None, block_size: int = 64, double_quant: bool = True,
                 dq_block_size: int = 256):
        n, k = weight.shape
        super().__init__(k, n, bias)
        self.block_size, self.dq_block_size, self.double_quant = block_size, dq_block_size, double_quant
        codes, absmax = quantize_nf4(weight, block_size)
        self.register_buffer("packed", packing.pack_int4(codes.reshape(n, k)))  # (N, K/2) uint8
        if double_quant:
            q, s, m = double_quantize(absmax, dq_block_size)
            self.register_buffer("absmax_q", q)  # (B,) int8
            self.register_buffer("absmax_scale", s)  # (B/256,) float32
            self.register_buffer("absmax_mean", m.reshape(1))  # (1,) float32
        else:
            self.register_buffer("absmax", absmax)  # (B,) float32

    @classmethod
    def from_linear(cls, lin, **kw):
        return cls(lin.weight, lin.bias, **kw)

    @property
    def qweight(self) -> torch.Tensor:
        """The packed codes under the name peft looks for on a quantized base layer (it places
        QLoRA adapters on that tensor's device)."""
        return self.packed

    def block_absmax(self) -> torch.Tensor:
        if self.double_quant:
            return double_dequantize(self.absmax_q, self.absmax_scale, self.absmax_mean[0], self.dq_block_size)
        return self.absmax

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight: one lookup per packed byte in a 256 × 2 table of code-value pairs (the
        low nibble first, as ``pack_int4`` packs), then the block absmax — the same values as
        unpacking and looking up each code, with half the indexing (this runs every forward and,
        under QLoRA, every backward)."""
        vals = NF4_PAIRS.to(self.packed.device)[self.packed.long()].reshape(-1, self.block_size)
        return (vals * self.block_absmax()[:, None].float()).reshape(self.out_features, self.in_features)

    def forward(self, x):
        x = self._pre(x)
        if torch.is_grad_enabled() and x.requires_grad:  # training adapters on top (QLoRA): keep W out of the graph
            return self._post(_DequantLinear.apply(x, self))
        return self._post(F.linear(x, self.dequantized_weight().to(x.dtype)))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", block_size={self.block_size}, double_quant={self.double_quant}"
