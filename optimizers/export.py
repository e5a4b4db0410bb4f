"""Export a quantized model in the compressed-tensors format (the checkpoint format vLLM
loads; neuralmagic/compressed-tensors): int4/int3 group-wise weights (RTN, GPTQ, AWQ) as
``pack-quantized``, int8 per-channel weights (W8A16) and W8A8 (SmoothQuant, int8_dynamic)
as ``int-quantized``. The package's own quantize/pack code writes the tensors from our
codes and scales; ``reload`` reads them back with ``AutoModelForCausalLM.from_pretrained``."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optimizers.quant.modules import QuantLinearBase, QuantLinearInt4, QuantLinearInt8, set_module


class ExportError(ValueError):
    """The model holds a quantization compressed-tensors cannot express; the message says which."""


@dataclass(frozen=True)
class Scheme:
    """What every quantized Linear of the model shares: the compressed-tensors scheme."""

    kind: str  # "w4a16" (any bits ≤ 4, group) | "w8a16" | "w8a8"
    bits: int
    group_size: int | None = None
    symmetric: bool = False
    act_strategy: str = "token"  # W8A8 dynamic activations: "token" (ours) or "tensor" (fbgemm)

    @property
    def format(self) -> str:
        return "pack-quantized" if self.kind == "w4a16" else "int-quantized"


def _dynamic_linear_type():
    return torch.ao.nn.quantized.dynamic.Linear


def _describe(name: str, m: nn.Module) -> Scheme:
    if isinstance(m, QuantLinearBase) and m.input_scale is not None:
        raise ExportError(
            f"{name} carries an explicit per-channel input scale (smoothing that could not fold into a "
            "preceding op); compressed-tensors has no such tensor. Re-run smoothquant with "
            "smooth_unfoldable=False / awq with scale_unfoldable=False, then export"
        )
    if type(m) is QuantLinearInt4:
        sym = bool((m.zero == 2 ** (m.bits - 1)).all())
        return Scheme("w4a16", m.bits, m.group_size, sym)
    if type(m) is QuantLinearInt8:
        return Scheme("w8a8" if m.act_int8 else "w8a16", 8, None, True)
    if isinstance(m, _dynamic_linear_type()):
        return Scheme("w8a8", 8, None, True, act_strategy="tensor")
    raise ExportError(
        f"{name} is {type(m).__name__}, which compressed-tensors cannot express here; exportable: "
        "int4_weight_only, gptq, awq (pack-quantized), int8_weight_only, smoothquant, int8_dynamic "
        "(int-quantized). NF4, FP8-with-our-scales and LLM.int8 outlier splits are not exported"
    )


def model_scheme(model: nn.Module) -> tuple[Scheme, dict[str, nn.Module]]:
    """The one scheme all quantized Linears share, and those modules by name."""
    dq = _dynamic_linear_type()
    mods = {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinearBase, dq))}
    if not mods:
        raise ExportError("the model has no quantized Linear layers; apply a quantization technique first")
    schemes = {n: _describe(n, m) for n, m in mods.items()}
    distinct = set(schemes.values())
    if len(distinct) > 1:
        raise ExportError(f"mixed quantization schemes {sorted(map(str, distinct))}; export needs one scheme for all layers")
    return distinct.pop(), mods


def _quant_args(s: Scheme):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    if s.kind == "w4a16":
        w = QuantizationArgs(num_bits=s.bits, type="int", symmetric=s.symmetric, strategy="group", group_size=s.group_size)
        return QuantizationScheme(targets=["Linear"], weights=w)
    w = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel")
    a = None
    if s.kind == "w8a8":
        a = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy=s.act_strategy, dynamic=True)
    return QuantizationScheme(targets=["Linear"], weights=w, input_activations=a)


def _qparams(m: nn.Module, s: Scheme) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(dequantized float weight, scale, signed zero point) in compressed-tensors conventions."""
    if isinstance(m, _dynamic_linear_type()):
        qw = m.weight()  # per-channel symmetric qint8
        scale = qw.q_per_channel_scales().float()
        w = qw.dequantize().float()
        return w, scale[:, None], None
    w = m.dequantized_weight().float()
    if s.kind == "w4a16":
        # our codes are unsigned 0..2^b-1 with zero z; compressed-tensors stores signed q = code - 2^(b-1)
        zp = (m.zero.to(torch.int16) - 2 ** (s.bits - 1)).to(torch.int8)
        return w, m.scale.float(), None if s.symmetric else zp
    return w, m.scale.float()[:, None], None


def _bias(m: nn.Module) -> torch.Tensor | None:
    if isinstance(m, _dynamic_linear_type()):
        return m.bias()
    return m.bias


@torch.no_grad()
def export_compressed_tensors(model: nn.Module, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write ``model`` (a HF PreTrainedModel with our quantized Linears) to ``out_dir`` in the
    compressed-tensors format; config.json gets ``quantization_config``. Returns the path."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus, apply_quantization_config

    if not hasattr(model, "save_pretrained"):
        raise ExportError(f"{type(model).__name__} is not a Hugging Face PreTrainedModel; compressed-tensors export needs one")
    scheme, mods = model_scheme(model)
    out = Path(out_dir)
    float_model = copy.deepcopy(model).float() if not any(isinstance(m, _dynamic_linear_type()) for m in mods.values()) \
        else copy.deepcopy(model)
    params = {}
    for name, m in mods.items():
        w, scale, zp = _qparams(m, scheme)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=_bias(m) is not None)
        lin.weight.copy_(w)
        if lin.bias is not None:
            lin.bias.copy_(_bias(m).float())
        set_module(float_model, name, lin)
        params[name] = (scale, zp)
    float_model = float_model.float()
    ignore = [n for n, m in float_model.named_modules() if type(m) is nn.Linear and n not in mods]
    qconfig = QuantizationConfig(config_groups={"group_0": _quant_args(scheme)}, ignore=ignore,
                                 quantization_status=QuantizationStatus.INITIALIZED)
    apply_quantization_config(float_model, qconfig, show_progress=False)
    for name, (scale, zp) in params.items():
        lin = float_model.get_submodule(name)
        lin.weight_scale.data = scale.to(lin.weight_scale.dtype).reshape(lin.weight_scale.shape)
        if hasattr(lin, "weight_zero_point"):
            lin.weight_zero_point.data = (zp if zp is not None else torch.zeros_like(lin.weight_zero_point)).to(
                lin.weight_zero_point.dtype).reshape(lin.weight_zero_point.shape)
    compressor = ModelCompressor.from_pretrained_model(float_model, quantization_format=scheme.format)
    compressor.compress_model(float_model)
    float_model.save_pretrained(out)
    compressor.update_config(str(out))
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(out)
    return out


def reload(out_dir: str | Path, dequantize: bool = True) -> nn.Module:
    """Load an exported checkpoint with transformers; ``dequantize=True`` has compressed-tensors
    unpack and dequantize every weight at load (else on the first forward)."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    qc = CompressedTensorsConfig(dequantize=dequantize)
    return AutoModelForCausalLM.from_pretrained(str(out_dir), quantization_config=qc).eval()


@torch.no_grad()
def check_round_trip(model: nn.Module, reloaded: nn.Module, atol: float = 1e-6) -> dict[str, float]:
    """Max |Δ| between our dequantized weights and the reloaded checkpoint's, per layer;
    raises if any exceeds ``atol`` (scales/zero points exact ⇒ weights exact)."""
    _, mods = model_scheme(model)
    scheme = model_scheme(model)[0]
    errs = {}
    for name, m in mods.items():
        w = _qparams(m, scheme)[0]
        errs[name] = float((reloaded.get_submodule(name).weight.float() - w).abs().max())
    bad = {n: e for n, e in errs.items() if e > atol * max(1.0, float(mods[n].dequantized_weight().abs().max())
                                                          if hasattr(mods[n], "dequantized_weight") else 1.0)}
    if bad:
        raise AssertionError(f"weights did not round-trip: {bad}")
    return errs
