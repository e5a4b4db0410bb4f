"""Linear and Conv2d layers whose weight is stored as b-bit codes into a small table of levels,
times an optional per-output-channel scale, ``W = levels[code]·scale[o]``: the one storage of
weight sharing (Deep Compression's k-means codebook, Han et al. 2016), ternary weights (TWN, Li
et al. 2016) and binary weights (XNOR-Net's BWN, Rastegari et al. 2016), plus its Huffman-coded
form (the codes entropy-coded, decoded once at the first forward). Shared by those techniques:
which layers they take, the swap, the stored-size figures and the straight-through fine-tune."""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from optimizers import huffman
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.quant.modules import is_output_head, replace_linears
from optimizers.sparsity import SparseCSRLinear
from quant import packing
from quant.errors import rel_error

Named = list[tuple[str, nn.Module]]


@dataclass
class Codes:
    """A weight as codes: ``codes`` uint8 (weight's shape); with ``zero_code`` code 0 is exactly 0.0
    (a pruned weight stays pruned) and code c ≥ 1 is ``levels[c − 1]``, else code c is ``levels[c]``;
    ``scale`` (out,) or (1,), or None, multiplies each output channel."""

    codes: torch.Tensor
    levels: torch.Tensor
    scale: torch.Tensor | None
    bits: int
    zero_code: bool

    def table(self) -> torch.Tensor:
        return table(self.levels, self.zero_code)

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.table(), self.codes, self.scale)


def table(levels: torch.Tensor, zero_code: bool) -> torch.Tensor:
    """The value of every code: a leading exact 0 for the reserved zero code, then the levels."""
    return torch.cat([levels.new_zeros(1), levels]) if zero_code else levels


def dequantize(values: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    w = values[codes.long()]  # gather: the gradient of each level sums over the weights that share it
    if scale is not None:
        w = w * scale.float().reshape(-1, *[1] * (w.dim() - 1))
    return w


class CodedWeight(nn.Module):
    """A Linear or Conv2d (zero padding) storing ``Codes``: codes packed ``bits`` to a code
    (``quant.packing.pack_bits``), levels fp32, scale fp16, bias as it was. Forward dequantizes
    (a gather) and runs ``F.linear`` / ``F.conv2d``. ``train_levels`` makes the levels a parameter
    (Deep Compression's centroid fine-tune trains it; ternary and binary levels stay fixed)."""

    def __init__(self, c: Codes, bias: torch.Tensor | None, conv: dict[str, Any] | None = None,
                 train_levels: bool = False):
        super().__init__()
        self.weight_shape = tuple(c.codes.shape)
        self.bits, self.zero_code = c.bits, c.zero_code
        self.conv = conv  # F.conv2d's stride, padding, dilation, groups; None: a Linear
        levels = c.levels.detach().float().clone()
        if train_levels:
            self.levels = nn.Parameter(levels, requires_grad=False)
        else:
            self.register_buffer("levels", levels)
        self.register_buffer("scale", None if c.scale is None else c.scale.detach().to(torch.float16).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._store(c.codes.to(torch.uint8))

    @classmethod
    def from_layer(cls, layer: nn.Module, c: Codes, train_levels: bool = False) -> "CodedWeight":
        conv = None if not isinstance(layer, nn.Conv2d) else {
            "stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation, "groups": layer.groups}
        return cls(c, layer.bias, conv, train_levels)

    def _store(self, codes: torch.Tensor) -> None:
        self.register_buffer("packed", packing.pack_bits(codes.reshape(-1), self.bits))  # (ceil(n·bits/8),)

    def codes(self) -> torch.Tensor:
        return packing.unpack_bits(self.packed, self.bits, self.numel).reshape(self.weight_shape)

    @property
    def numel(self) -> int:
        return int(torch.Size(self.weight_shape).numel())

    def dequantized_weight(self) -> torch.Tensor:  # weight's shape, float32
        return dequantize(table(self.levels, self.zero_code), self.codes(), self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized_weight().to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, w, b) if self.conv is None else F.conv2d(x, w, b, **self.conv)

    def extra_repr(self) -> str:
        kind = "linear" if self.conv is None else f"conv2d {self.conv}"
        return f"{kind}, weight={self.weight_shape}, bits={self.bits}, levels={self.levels.numel()}, zero_code={self.zero_code}"


class HuffmanCodedWeight(CodedWeight):
    """A ``CodedWeight`` whose codes are canonical-Huffman coded (``optimizers.huffman``): the
    stored state is the bitstream, its block offsets and the code-length table. The codes are
    decoded once, at the first forward, into a non-persistent cache (runtime memory, not stored)."""

    def __init__(self, c: Codes, bias: torch.Tensor | None, conv: dict[str, Any] | None = None,
                 train_levels: bool = False, block_size: int = 1024):
        self.block_size = block_size
        super().__init__(c, bias, conv, train_levels)

    def _store(self, codes: torch.Tensor) -> None:
        h = huffman.encode(codes, 2**self.bits, self.block_size)
        self.register_buffer("stream", h.stream)  # (bytes,) uint8, MSB first
        self.register_buffer("block_offsets", h.offsets)  # (blocks,) int32
        self.register_buffer("code_lengths", h.lengths)  # (2^bits,) uint8
        self.register_buffer("decoded", None, persistent=False)

    @classmethod
    def from_coded(cls, m: CodedWeight, block_size: int) -> "HuffmanCodedWeight":
        c = Codes(m.codes(), m.levels, m.scale, m.bits, m.zero_code)
        return cls(c, m.bias, m.conv, isinstance(m.levels, nn.Parameter), block_size)

    def codes(self) -> torch.Tensor:
        if self.decoded is None:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable by a later fine-tune
                h = huffman.HuffmanStream(self.stream, self.block_offsets, self.code_lengths, self.numel,
                                          self.block_size)
                self.decoded = huffman.decode(h).to(torch.uint8).reshape(self.weight_shape)
        return self.decoded

    def extra_repr(self) -> str:
        return super().extra_repr() + f", huffman block_size={self.block_size}"


# ---------------------------------------------------------------- selection and swap


def coded_layers(model: nn.Module, include_lm_head: bool = False) -> Named:
    """The layers these techniques take, in module order: plain nn.Linear (a CSR-stored pruned one
    too; the LM head only if asked) and nn.Conv2d with zero padding."""
    head = is_output_head(model)
    return [(n, m) for n, m in model.named_modules()
            if (type(m) in (nn.Linear, SparseCSRLinear) and (include_lm_head or not head(n, m)))
            or (type(m) is nn.Conv2d and m.padding_mode == "zeros")]


def layer_weight(m: nn.Module) -> torch.Tensor:
    """The dense weight of a selected layer (a CSR-stored one expanded), detached."""
    return (m.dense_weight() if isinstance(m, SparseCSRLinear) else m.weight).detach()


def without_first_last(model: nn.Module, layers: Named) -> Named:
    """``layers`` less the first (the stem that sees the input) and the last (the classifier: the
    LM head if the model has one, else the last Linear), which binary/ternary papers keep in
    full precision."""
    if not layers:
        return layers
    head = is_output_head(model)
    heads = [n for n, m in layers if head(n, m)] or [n for n, m in layers if type(m) in (nn.Linear, SparseCSRLinear)][-1:]
    drop = {layers[0][0], *heads}
    return [(n, m) for n, m in layers if n not in drop]


def require_layers(layers: Named, technique: str) -> None:
    if not layers:
        raise ValueError(f"{technique} works on nn.Linear and nn.Conv2d layers and this model has none left to code "
                         "(no nn.Linear or nn.Conv2d: an earlier step may have replaced them; put this step first)")


def swap(model: nn.Module, layers: Named, factory: Callable[[str, nn.Module], nn.Module]) -> list[str]:
    names = {n for n, _ in layers}
    return replace_linears(model, lambda n, m: n in names, factory)


class CodedLayersTechnique(Technique):
    """A technique that codes Linear and Conv2d layers: refused on a model with neither, or, when
    its config's ``trains_field`` asks for a fine-tune, on a workload without a training split."""

    replaces_linear = True
    trains_field: ClassVar[str] = "recovery_steps"

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and not (target.has_linear or target.head_linear or target.convs):
            return Verdict("refused", f"{self.name} works on nn.Linear and nn.Conv2d layers and this model has none")
        if verdict.runnable and getattr(config, self.trains_field, False) and not target.has_train:
            return Verdict("refused", f"{self.name}: {self.trains_field} asks for a fine-tune, which needs a training "
                                      "split, and this workload has none; turn it off or use a workload with one "
                                      "(digits-cnn, tiny-llama)", blame="config")
        return verdict


# ---------------------------------------------------------------- stored size


def weight_bytes(m: CodedWeight) -> int:
    """Stored bytes of a coded layer's weight: codes (or bitstream and table), levels, scale; no bias."""
    return sum(t.numel() * t.element_size() for k, t in m.state_dict().items() if k != "bias")


def coded_modules(model: nn.Module) -> list[CodedWeight]:
    return [m for m in model.modules() if isinstance(m, CodedWeight)]


def storage_figures(mods: list[CodedWeight]) -> dict[str, float]:
    """Over the coded layers: stored bits per weight and the compression against fp32 and against a
    16-bit copy of the same weights (Deep Compression's Table 1 quotes the fp32 one)."""
    n = sum(m.numel for m in mods)
    b = sum(weight_bytes(m) for m in mods)
    if not n or not b:
        return {}
    return {"coded_layers": float(len(mods)), "coded_weights": float(n), "bits_per_weight": 8.0 * b / n,
            "compression_vs_fp32": 4.0 * n / b, "compression_vs_16bit": 2.0 * n / b}


def storage_note(figures: dict[str, float]) -> str:
    return (f"{int(figures['coded_layers'])} layers ({int(figures['coded_weights'])} weights) stored at "
            f"{figures['bits_per_weight']:.2f} bits per weight: ×{figures['compression_vs_fp32']:.1f} against fp32, "
            f"×{figures['compression_vs_16bit']:.1f} against a 16-bit copy (the rest of the model unchanged)")


# ---------------------------------------------------------------- binary / ternary: config and STE fine-tune


class LowBitConfig(TechniqueConfig):
    """What binary_weights and ternary_weights share."""

    include_first_last: bool = Field(False, description="also code the first layer (the stem) and the classifier "
                                                        "(the LM head); the papers keep both in full precision")
    recovery_steps: int = Field(0, ge=0, le=100_000, description="0: no training. Else fine-tune the latent fp weights "
                                "this many steps on the training split, coded in every forward (straight-through "
                                "estimator), then code them; at least 3")
    recovery_batch_size: int = Field(32, ge=1, le=4096, description="images (or sequences) per fine-tune step")
    recovery_lr: float | None = Field(None, gt=0, le=1.0, description="fine-tune learning rate (default 1e-3 for "
                                                                       "vision, 1e-4 for LMs)")

    @field_validator("recovery_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if 0 < v < 3:
            raise ValueError(f"recovery_steps={v}: use 0 (no fine-tune) or at least 3")
        return v


class _StraightThrough(nn.Module):
    """A weight parametrization: forward the coded weight, pass the gradient to the latent one."""

    def __init__(self, quantize: Callable[[torch.Tensor], Codes]):
        super().__init__()
        self.quantize = quantize

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (self.quantize(w.detach()).dequantize().to(w.dtype) - w).detach()


def straight_through_finetune(workload: Any, model: nn.Module, names: list[str], quantize: Callable[[torch.Tensor], Codes],
                              config: LowBitConfig) -> tuple[nn.Module, dict[str, float], dict]:
    """Train ``model`` (its ``names`` layers coded in every forward, latent weights updated through
    the straight-through estimator) with the training loop; returns it with plain latent weights."""
    from torch.nn.utils import parametrize

    from optimizers.sparsity import SparseCSRLinear as CSR
    from optimizers.training.sparse import densify
    from optimizers.training.transform import TrainBudget, fit

    model = copy.deepcopy(model)
    if any(isinstance(m, CSR) for m in model.modules()):
        densify(model)
    mods = dict(model.named_modules())
    for n in names:
        parametrize.register_parametrization(mods[n], "weight", _StraightThrough(quantize))
    budget = TrainBudget(steps=config.recovery_steps, batch_size=config.recovery_batch_size, lr=config.recovery_lr)
    trained, figures, details = fit(workload, budget, start=model)
    for m in trained.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)  # the latent weight
    return trained, figures, details


class LowBitTechnique(CodedLayersTechnique):
    """binary_weights / ternary_weights: select (first and last kept unless asked), optionally
    fine-tune with the straight-through estimator, code the selected layers. A subclass gives its
    quantizer ``codes(w, per_channel)`` and the figures and note that describe its result."""

    codes: ClassVar[Callable[..., Codes]]

    def quantizer(self, config: Any) -> Callable[[torch.Tensor], Codes]:
        return functools.partial(type(self).codes, per_channel=config.per_channel)

    def describe_result(self, model: nn.Module, errors: dict[str, float], config: Any) -> tuple[dict[str, float], str]:
        raise NotImplementedError

    def apply(self, workload: Any, config: Any) -> StepRecord:
        quantize = self.quantizer(config)
        model = copy.deepcopy(workload.model).eval()
        layers = coded_layers(model, include_lm_head=config.include_first_last)
        if not config.include_first_last:
            layers = without_first_last(model, layers)
        require_layers(layers, self.name)
        names = [n for n, _ in layers]
        figures: dict[str, float] = {}
        details: dict = {}
        notes = [] if config.include_first_last else [f"kept in full precision: the first layer and the classifier "
                                                      f"({len(layers)} layers coded)"]
        if config.recovery_steps:
            model, figures, details = straight_through_finetune(workload, model, names, quantize, config)
            layers = [(n, m) for n, m in model.named_modules() if n in set(names)]
            notes.append(f"fine-tuned {config.recovery_steps} steps with the straight-through estimator (latent fp "
                         "weights, coded in each forward), then coded")
        else:
            notes.append("accuracy without retraining: TWN and XNOR-Net train these weights from scratch or "
                         "fine-tune them (set recovery_steps, or add recovery_finetune after this step)")
        coded = {n: quantize(layer_weight(m)) for n, m in layers}
        errors = {n: rel_error(layer_weight(m), coded[n].dequantize()) for n, m in layers}
        swap(model, layers, lambda n, m: CodedWeight.from_layer(m, coded[n]))
        model.requires_grad_(False)
        figures |= storage_figures(coded_modules(model))
        extra, first_note = self.describe_result(model, errors, config)
        return StepRecord(workload.with_model(model), notes=[first_note, *notes, storage_note(figures)],
                          diagnostics={**figures, **extra}, details={**details, "rel_error": errors})


def per_channel_rows(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """(out, rest) rows to take a statistic over: one per output channel, or the whole layer as one."""
    return w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
