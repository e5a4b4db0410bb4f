"""FP8 (Micikevicius et al. 2022, arXiv:2209.05433): E4M3 (max 448) or E5M2 (max 57344)
weights stored as ``torch.float8_*`` with per-tensor or per-row scales. CPU: weights are
upcast per call (simulated compute), activations optionally quantize-dequantized through
FP8. CUDA with compute capability ≥ 8.9: ``torch._scaled_mm`` on FP8 operands."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from optimizers.quant.modules import QuantLinearBase, _flat

FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def fp8_dtype(fmt: str) -> torch.dtype:
    if fmt not in FP8_DTYPES:
        raise ValueError(f"fp8 format {fmt!r} is not supported; choose one of {sorted(FP8_DTYPES)}")
    return FP8_DTYPES[fmt]


def quantize_fp8(x: torch.Tensor, fmt: str = "e4m3", granularity: str = "per_row") -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, K) → (q float8 (N, K), scale float32 (N, 1) per row or (1, 1) per tensor);
    x ≈ q.float() * scale, the absmax mapped to the format's largest finite value."""
    dt = fp8_dtype(fmt)
    if granularity not in ("per_row", "per_tensor"):
        raise ValueError(f"granularity={granularity!r} is not supported; choose 'per_row' or 'per_tensor'")
    fmax = torch.finfo(dt).max
    xf = x.detach().float()
    amax = xf.abs().amax(dim=-1, keepdim=True) if granularity == "per_row" else xf.abs().amax().reshape(1, 1)
    scale = amax.clamp(min=1e-12) / fmax
    q = (xf / scale).clamp(-fmax, fmax).to(dt)
    return q, scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def scaled_mm_supported(device: torch.device | str) -> bool:
    d = torch.device(device)
    return d.type == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability(d) >= (8, 9)


class QuantLinearFP8(QuantLinearBase):
    """FP8 weights (+ scale). ``act_fmt`` None: weight-only; else activations are quantized
    dynamically per token to that format (per-row scales) — real FP8 GEMM on cc ≥ 8.9,
    simulated (quantize-dequantize) otherwise."""

    def __init__(self, weight, bias=None, fmt: str = "e4m3", granularity: str = "per_row", act_fmt: str | None = None):
        n, k = weight.shape
        super().__init__(k, n, bias)
        q, s = quantize_fp8(weight, fmt, granularity)
        self.fmt, self.granularity, self.act_fmt = fmt, granularity, act_fmt
        self.register_buffer("qweight", q)  # (N, K) float8
        self.register_buffer("scale", s.float())  # (N, 1) or (1, 1)

    @classmethod
    def from_linear(cls, lin, **kw):
        return cls(lin.weight, lin.bias, **kw)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_fp8(self.qweight, self.scale)

    def forward(self, x):
        x = self._pre(x)
        if self.act_fmt is None:
            return self._post(F.linear(x, self.dequantized_weight().to(x.dtype)))
        x2, lead = _flat(x)  # (M, K)
        xq, xs = quantize_fp8(x2, self.act_fmt, "per_row")  # (M, K), (M, 1)
        y = None
        if scaled_mm_supported(x.device) and self.granularity == "per_row" and self.fmt == self.act_fmt == "e4m3":
            try:  # row-wise scaling: scale_a (M, 1), scale_b (1, N); weight as column-major (K, N)
                y = torch._scaled_mm(xq, self.qweight.t(), scale_a=xs, scale_b=self.scale.t().contiguous(),
                                     out_dtype=torch.bfloat16)
            except RuntimeError:  # shapes the kernel refuses (dims not multiples of 16): simulate
                y = None
        if y is None:
            y = F.linear(dequantize_fp8(xq, xs), self.dequantized_weight())
        return self._post(y.to(x.dtype).reshape(*lead, self.out_features))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", fmt={self.fmt}, granularity={self.granularity}, act_fmt={self.act_fmt}"
