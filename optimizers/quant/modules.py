"""Quantized replacements for nn.Linear that store only packed buffers (true bytes) and
a swap helper, in the style of gpt-fast's ``WeightOnlyInt8Linear``: a tiny module plus a
short ``replace_linears``. On CPU the weight-only formats run through PyTorch's own packed
kernels — int8 through ``aten._weight_int8pack_mm``, int4 through
``aten._weight_int4pack_mm_for_cpu`` (weights converted once into its tile layout) — with no
dequantize per call; ``dequantized_weight`` is the reference they are tested against. On CUDA
the Triton kernels in ``kernels`` are used when importable (imported lazily)."""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from quant import packing
from quant.errors import sqnr_db  # noqa: F401  (re-exported for the quantization tests)


# ---------------------------------------------------------------- helpers


def _kernel(name: str):
    """The function ``kernels.<name>.<name>`` if Triton is importable, else None (then the eager path runs)."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return None
    return getattr(importlib.import_module(f"kernels.{name}"), name)


def quantize_per_token_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric int8 per row (token): returns (q int8 (M, K), scale float32 (M, 1)).
    Written with one float temporary: on CPU each large temporary is a fresh allocation whose
    page faults cost more than the arithmetic (an ``x.abs()`` of 256x576 took 3.7 ms)."""
    x = x.detach().float()
    scale = torch.linalg.vector_norm(x, ord=float("inf"), dim=-1, keepdim=True).clamp_(min=1e-8).div_(127.0)  # (M, 1)
    q = torch.div(x, scale).round_().clamp_(-127, 127).to(torch.int8)
    return q, scale


def int8_matmul(xq: torch.Tensor, wq_t: torch.Tensor) -> torch.Tensor:
    """(M, K) int8 @ (K, N) int8 → float32 (M, N), exact int32 accumulation where torch can."""
    try:
        return torch._int_mm(xq, wq_t).float()
    except (RuntimeError, AttributeError):  # shapes / devices _int_mm refuses
        return (xq.double() @ wq_t.double()).float()


# Activations the packed CPU kernels serve: 16-bit ones. Their fp32 paths are ~8x slower than the bf16
# ones (measured on AVX2: 1536x576 at batch 1, int4 1.22 ms in fp32 vs 0.14 ms in bf16; int8 0.79 vs
# 0.12 ms), no faster than dequantizing, so an fp32 model keeps the exact reference path: weight-only
# quantization never changes the activations' dtype. Run the model in bf16 (half_precision, or
# --baseline-dtype bf16) for the fast path, as torchao's CPU int4 path requires too.
CPU_PACKED_DTYPES = (torch.bfloat16, torch.float16)


def _flat(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    return x.reshape(-1, x.shape[-1]), x.shape[:-1]


class QuantLinearBase(nn.Module):
    """Common bits: shape, optional float bias, optional per-input-channel pre-scale.

    ``input_scale`` (K,) is the AWQ/SmoothQuant smoothing factor 1/s when it could not be
    folded into a preceding norm: forward computes ``layer(x * input_scale)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        if bias is not None:
            self.register_buffer("bias", bias.detach().clone())
        else:
            self.register_buffer("bias", None)
        self.register_buffer("input_scale", None)

    def set_input_scale(self, inv_s: torch.Tensor) -> None:
        self.input_scale = inv_s.detach().float().clone()  # (K,) registered buffer

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_scale is None else x * self.input_scale.to(x.dtype)

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def dequantized_weight(self) -> torch.Tensor:  # (N, K) float32, for tests and export
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ---------------------------------------------------------------- int8


class QuantLinearInt8(QuantLinearBase):
    """int8 per-output-channel weights (packing.py layout); activations float (W8A16) or,
    with ``act_int8=True``, dynamic per-token int8 (W8A8, SmoothQuant's setting)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias=None, act_int8: bool = False):
        n, k = qweight.shape
        super().__init__(k, n, bias)
        self.register_buffer("qweight", qweight.to(torch.int8).contiguous())  # (N, K)
        self.register_buffer("scale", scale.float().contiguous())  # (N,)
        self.act_int8 = act_int8

    @classmethod
    def from_linear(cls, lin: nn.Linear, act_int8: bool = False, weight: torch.Tensor | None = None):
        q, s = packing.quantize_int8_per_channel(lin.weight if weight is None else weight)
        return cls(q, s, lin.bias, act_int8=act_int8)

    def dequantized_weight(self) -> torch.Tensor:
        return packing.dequantize_int8_per_channel(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pre(x)
        if self.act_int8:
            x2, lead = _flat(x)  # (M, K)
            xq, xs = quantize_per_token_int8(x2)
            y = int8_matmul(xq, self.qweight.t()).mul_(xs).mul_(self.scale)  # (M, N), scaled in place
            return self._post(y.to(x.dtype).reshape(*lead, self.out_features))
        if x.is_cuda and (k := _kernel("matmul_w8a16")) is not None:
            x2, lead = _flat(x)  # the kernel takes (M, K)
            return self._post(k(x2, self.qweight, self.scale).reshape(*lead, self.out_features))
        if not x.is_cuda and x.dtype in CPU_PACKED_DTYPES:
            x2, lead = _flat(x)
            y = torch.ops.aten._weight_int8pack_mm(x2.contiguous(), self.qweight, self.scale.to(x.dtype))
            return self._post(y.reshape(*lead, self.out_features))
        y = F.linear(x, self.qweight.to(x.dtype)) * self.scale.to(x.dtype)
        return self._post(y)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", act_int8={self.act_int8}"


# ---------------------------------------------------------------- int4 (and 2/3-bit codes)


class QuantLinearInt4(QuantLinearBase):
    """Group-wise int4 weights (packing.py layout: uint8 two codes per byte, per-group scale
    and zero point). Scales are stored as float16 and zero points as uint8 (3 bytes a group).
    Codes of 3-bit GPTQ (0..7) use the same 4-bit storage."""

    def __init__(self, packed, scale, zero, group_size: int, bias=None, bits: int = 4):
        n, k2 = packed.shape
        super().__init__(k2 * 2, n, bias)
        self.group_size, self.bits = group_size, bits
        self.register_buffer("packed", packed.to(torch.uint8).contiguous())  # (N, K/2)
        self.register_buffer("scale", scale.to(torch.float16).contiguous())  # (N, K/g)
        self.register_buffer("zero", torch.round(zero).to(torch.uint8).contiguous())  # (N, K/g)
        # the CPU kernel's own layout of the same codes, built at the first CPU forward: runtime memory
        # (non-persistent, so not in the state dict; the harness adds it to peak memory)
        self.register_buffer("cpu_int4pack", None, persistent=False)
        self.register_buffer("cpu_scale_zero", None, persistent=False)
        self.cpu_int4pack_failed = False
        if self.packed.device.type == "cpu":
            self._cpu_pack()  # now, not inside a compiled forward

    @classmethod
    def from_codes(cls, codes, scale, zero, group_size: int, bias=None, bits: int = 4):
        return cls(packing.pack_int4(codes), scale, zero, group_size, bias, bits)

    @classmethod
    def from_linear(cls, lin: nn.Linear, group_size: int = 128, symmetric: bool = False,
                    weight: torch.Tensor | None = None):
        w = lin.weight if weight is None else weight
        # fp16-representable scales so the stored scale is exactly the one used to round
        codes, scale, zero = quantize_groupwise(w, 4, group_size, symmetric)
        return cls.from_codes(codes, scale, zero, group_size, lin.bias)

    def dequantized_weight(self) -> torch.Tensor:
        return packing.dequantize_int4_groupwise(self.packed, self.scale, self.zero, self.group_size)

    def _cpu_pack(self) -> bool:
        """Convert the codes once into ``_weight_int4pack_mm_for_cpu``'s layout: that kernel computes
        ``(code − 8)·scale + zero'``, so ``zero' = (8 − zero_point)·scale`` gives our ``(code − zero_point)·scale``."""
        if self.cpu_int4pack is None and not self.cpu_int4pack_failed:
            try:
                codes = packing.unpack_int4(self.packed).to(torch.int32)
                self.cpu_int4pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
                # (K/g, N, 2) in bf16, the activations' usual dtype, so no call converts it (and Inductor's
                # lowering of the kernel gets a plain buffer); fp16 activations convert per call
                self.cpu_scale_zero = self._scale_zero(torch.bfloat16)
            except (RuntimeError, NotImplementedError):  # a shape the kernel refuses, or the meta device
                self.cpu_int4pack, self.cpu_scale_zero, self.cpu_int4pack_failed = None, None, True
        return self.cpu_int4pack is not None

    def _scale_zero(self, dtype: torch.dtype) -> torch.Tensor:
        scale, zero = self.scale.float(), self.zero.float()
        return torch.stack([scale, (8 - zero) * scale], dim=-1).transpose(0, 1).contiguous().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pre(x)
        if x.is_cuda and (k := _kernel("matmul_w4a16")) is not None and self.group_size % 16 == 0:
            x2, lead = _flat(x)  # the kernel takes (M, K)
            y = k(x2, self.packed, self.scale.float(), self.zero.float(), self.group_size)
            return self._post(y.reshape(*lead, self.out_features))
        if not x.is_cuda and x.dtype in CPU_PACKED_DTYPES and self._cpu_pack():
            x2, lead = _flat(x)
            sz = self.cpu_scale_zero if x.dtype == self.cpu_scale_zero.dtype else self._scale_zero(x.dtype)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.contiguous(), self.cpu_int4pack, self.group_size, sz)
            return self._post(y.reshape(*lead, self.out_features))
        return self._post(F.linear(x, self.dequantized_weight().to(x.dtype)))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self.bits}, group_size={self.group_size}"


def cpu_int4_path_note(model: torch.nn.Module, device: str) -> list[str]:
    """Why an int4 step on a fp32 CPU model decodes slowly: the packed kernel
    (``_weight_int4pack_mm_for_cpu``) takes bf16/fp16 activations, so fp32 activations take the
    exact dequantizing path (every weight expanded per call). Empty when the packed path applies."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if device.startswith("cuda") or dtype in CPU_PACKED_DTYPES or dtype is None:
        return []
    return [f"the model computes in {str(dtype).removeprefix('torch.')}: on CPU the packed int4 kernel takes bf16/fp16 "
            "activations, so these layers run the exact dequantizing path (slower than the baseline); put "
            "half_precision (bf16) before this step, or run with --baseline-dtype bf16, for the packed kernel"]


def quant_params(wg: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max quantizer of GPTQ's reference code on groups ``wg`` (..., g): (scale, zero) (...).

    Asymmetric: the range always includes 0, ``scale = (max - min) / (2^b - 1)``,
    ``zero = round(-min / scale)``. Symmetric: ``zero = 2^(b-1)``, ``scale = amax / (2^(b-1) - 1)``.
    Scales are rounded to float16 (their storage dtype) so stored == used.
    """
    maxq = 2**bits - 1
    if symmetric:
        half = 2 ** (bits - 1)
        scale = (wg.abs().amax(dim=-1).clamp(min=1e-8) / (half - 1)).half().float()
        zero = torch.full_like(scale, float(half))
    else:
        wmin = wg.amin(dim=-1).clamp(max=0.0)
        wmax = wg.amax(dim=-1).clamp(min=0.0)
        scale = ((wmax - wmin) / maxq).clamp(min=1e-6).half().float()
        zero = torch.round(-wmin / scale).clamp(0, maxq)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``clamp(round(w / scale) + zero, 0, 2^b - 1)`` (float, same shape as w)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def quantize_groupwise(w: torch.Tensor, bits: int, group_size: int, symmetric: bool = False):
    """Round-to-nearest (RTN) per group of input columns: (codes uint8 (N, K), scale (N, G), zero (N, G))."""
    check_bits(bits, (2, 3, 4))
    n, k = w.shape
    packing._check_group(k, group_size)
    wg = w.detach().float().reshape(n, k // group_size, group_size)  # (N, G, g)
    scale, zero = quant_params(wg, bits, symmetric)
    codes = quantize_codes(wg, scale[..., None], zero[..., None], bits)
    return codes.reshape(n, k).to(torch.uint8), scale, zero


def dequantize_groupwise(codes, scale, zero, group_size: int) -> torch.Tensor:
    n, k = codes.shape
    g = codes.float().reshape(n, k // group_size, group_size)
    return ((g - zero[..., None].float()) * scale[..., None].float()).reshape(n, k)


def check_bits(bits: int, allowed: tuple[int, ...]) -> None:
    if bits not in allowed:
        raise ValueError(f"bits={bits} is not supported; choose one of {list(allowed)}")


# ---------------------------------------------------------------- swapping


def is_output_head(model: nn.Module) -> Callable[[str, nn.Module], bool]:
    """Predicate for the LM head (output embeddings / ``lm_head``), excluded by default."""
    head = None
    if hasattr(model, "get_output_embeddings"):
        try:
            head = model.get_output_embeddings()
        except Exception:
            head = None
    return lambda name, mod: mod is head or name.split(".")[-1] == "lm_head"


def default_predicate(model: nn.Module, include_lm_head: bool = False) -> Callable[[str, nn.Module], bool]:
    """nn.Linear layers, minus the LM head unless ``include_lm_head`` (embeddings are never Linear)."""
    head = is_output_head(model)
    return lambda name, mod: isinstance(mod, nn.Linear) and (include_lm_head or not head(name, mod))


def find_linears(model: nn.Module, predicate: Callable[[str, nn.Module], bool]) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if predicate(n, m)}


def require_linears(model: nn.Module, predicate) -> dict[str, nn.Linear]:
    lins = find_linears(model, predicate)
    if not lins:
        raise ValueError(
            "model has no nn.Linear layer to quantize (include_lm_head=False excludes the LM head); "
            "choose a model with Linear layers, or set include_lm_head=True if the head is the only one"
        )
    return lins


def group_size_problem(in_features: dict[str, int], group_size: int) -> str | None:
    """Why ``group_size`` does not fit these layers (it must divide every in_features), naming
    the sizes that do; None when it fits. ``check`` refuses with it before a run starts."""
    bad = {n: k for n, k in in_features.items() if group_size <= 0 or k % group_size}
    if not bad:
        return None
    ok = [g for g in (256, 128, 64, 32, 16, 8) if all(k % g == 0 for k in in_features.values())]
    name, k = next(iter(bad.items()))
    return (f"group_size={group_size} must divide in_features of every quantized layer "
            f"({name} has in_features={k}); valid choices here: {ok or 'none (odd in_features)'}")


DEFAULT_GROUP_SIZES = (128, 64, 32)  # an unset group_size: the first of these dividing every quantized layer


def check_group_size(linears: dict[str, nn.Linear], group_size: int | None) -> int:
    """The group size to use: ``group_size`` if it divides every layer's in_features, else a clear
    error; unset (None), the first of DEFAULT_GROUP_SIZES that does (smollm2's 576-wide layers: 64)."""
    in_features = {n: m.in_features for n, m in linears.items()}
    if group_size is None:
        fits = [g for g in DEFAULT_GROUP_SIZES if group_size_problem(in_features, g) is None]
        if not fits:
            raise ValueError(group_size_problem(in_features, DEFAULT_GROUP_SIZES[-1]))
        return fits[0]
    problem = group_size_problem(in_features, group_size)
    if problem:
        raise ValueError(problem)
    return group_size


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def replace_linears(model: nn.Module, predicate: Callable[[str, nn.Module], bool],
                    factory: Callable[[str, nn.Linear], nn.Module]) -> list[str]:
    """Swap every module for which ``predicate(name, module)`` holds with ``factory(name, module)``.
    Mutates ``model`` in place; returns the swapped names. Callers deep-copy first."""
    targets = find_linears(model, predicate)
    for name, lin in targets.items():
        set_module(model, name, factory(name, lin))
    return list(targets)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy to quantize, so the input workload's model is never mutated."""
    return copy.deepcopy(model)


