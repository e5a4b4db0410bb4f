"""Quantization-aware training: Linear weights pass through a fake quantizer with a
straight-through estimator (Bengio et al. 2013; Jacob et al. 2018, arXiv:1712.05877) during
a bounded fine-tune, then the trained weights are converted to real packed modules.
The loss is next-token cross-entropy for LMs, cross-entropy for (image, label) batches, and
distillation against the float model's outputs otherwise."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from quant import packing
from optimizers.quant.calibrate import run_batch
from optimizers.quant.modules import dequantize_groupwise, quantize_groupwise


def fake_quant_weight(w: torch.Tensor, bits: int, group_size: int, symmetric: bool = False) -> torch.Tensor:
    """Quantize-dequantize w (int8 per-channel, or int4 group-wise asymmetric) — no gradient path."""
    if bits == 8:
        return packing.dequantize_int8_per_channel(*packing.quantize_int8_per_channel(w)).to(w.dtype)
    return dequantize_groupwise(*quantize_groupwise(w, bits, group_size, symmetric), group_size).to(w.dtype)


def ste(w: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """Forward value wq, gradient of identity w.r.t. w (straight-through estimator)."""
    return w + (wq - w).detach()


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward uses the fake-quantized weight; gradients flow to the float weight."""

    bits: int = 8
    group_size: int = 128
    symmetric: bool = False

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int, group_size: int, symmetric: bool = False) -> "FakeQuantLinear":
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.in_features, m.out_features = lin.in_features, lin.out_features
        m.weight, m.bias = lin.weight, lin.bias
        m.bits, m.group_size, m.symmetric = bits, group_size, symmetric
        return m

    def forward(self, x):
        w = ste(self.weight, fake_quant_weight(self.weight.detach(), self.bits, self.group_size, self.symmetric))
        return F.linear(x, w, self.bias)


def _logits(out: Any) -> torch.Tensor:
    for k in ("logits", "last_hidden_state"):
        if getattr(out, k, None) is not None:
            return getattr(out, k)
    return out[0] if isinstance(out, (tuple, list)) else out


def qat_loss(model: nn.Module, teacher: nn.Module, batch: Any, task: str) -> torch.Tensor:
    """Next-token CE for LMs; CE on (images, labels) pairs; else KL/MSE to the float teacher."""
    if task == "causal_lm" and torch.is_tensor(batch):
        return model(input_ids=batch, labels=batch, use_cache=False).loss
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and task == "vision":
        return F.cross_entropy(_logits(model(batch[0])), batch[1])
    out = _logits(run_batch(model, batch))
    with torch.no_grad():
        ref = _logits(run_batch(teacher, batch))
    if task == "encoder":  # embeddings: match the hidden states
        return F.mse_loss(out, ref)
    return F.kl_div(F.log_softmax(out, -1), F.log_softmax(ref, -1), log_target=True, reduction="batchmean")


def train_fake_quant(model: nn.Module, teacher: nn.Module, batches: list[Any], task: str, steps: int,
                     lr: float) -> list[float]:
    """``steps`` AdamW steps cycling over ``batches``; returns the loss curve."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        loss = qat_loss(model, teacher, batches[step % len(batches)], task)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
