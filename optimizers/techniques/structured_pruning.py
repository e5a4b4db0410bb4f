"""Structured pruning: remove whole channels so the model physically shrinks and dense kernels
do less work (Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017; LLM-Pruner 2023).
Gated MLPs (Llama gate/up/down): drop intermediate channels with the smallest
√(‖gate_j‖² + ‖up_j‖²). Sequential CNNs (conv → BN → [depthwise conv → BN] → conv | Linear):
drop output filters with the smallest ‖W_c‖₁·|γ_c/σ_c| (the filter's L1 norm after BN)."""
from __future__ import annotations

import copy
import math

import torch
from pydantic import Field
from torch import nn

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.quant.modules import set_module
from optimizers.registry import register
from optimizers.workloads.base import Workload


class StructuredPruningConfig(TechniqueConfig):
    amount: float = Field(0.25, ge=0.0, lt=1.0, description="fraction of MLP intermediate channels / conv filters removed")
    round_to: int = Field(8, ge=1, description="channels kept are rounded up to a multiple of this (GEMM-friendly shapes)")


def kept_count(channels: int, amount: float, round_to: int) -> int:
    keep = max(1, math.ceil((1.0 - amount) * channels / round_to - 1e-9) * round_to)
    return min(keep, channels)


def top_channels(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores, in their original order (so the layout is kept)."""
    return scores.topk(k).indices.sort().values


def _slice_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.detach()
    w = w if rows is None else w[rows]
    w = w if cols is None else w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if rows is None else lin.bias.detach()[rows])
    return new


def gated_mlps(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("gate_proj", "up_proj", "down_proj"))]


@torch.no_grad()
def prune_gated_mlp(mlp: nn.Module, k: int) -> None:
    """Keep the ``k`` intermediate channels of largest √(‖gate_j‖² + ‖up_j‖²): rows of gate/up, columns of down."""
    score = mlp.gate_proj.weight.pow(2).sum(1) + mlp.up_proj.weight.pow(2).sum(1)  # (intermediate,)
    keep = top_channels(score.sqrt(), k)
    mlp.gate_proj = _slice_linear(mlp.gate_proj, rows=keep)
    mlp.up_proj = _slice_linear(mlp.up_proj, rows=keep)
    mlp.down_proj = _slice_linear(mlp.down_proj, cols=keep)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = k


# ---------------------------------------------------------------- sequential CNNs

_PASS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Dropout, nn.Identity)


def _conv(c: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None, depthwise: bool = False) -> nn.Conv2d:
    w = c.weight.detach()  # (out, in / groups, kh, kw)
    w = w if out_idx is None else w[out_idx]
    w = w if in_idx is None or depthwise else w[:, in_idx]
    out_ch = w.shape[0]
    in_ch = out_ch if depthwise else w.shape[1]
    new = nn.Conv2d(in_ch, out_ch, c.kernel_size, c.stride, c.padding, c.dilation, groups=out_ch if depthwise else 1,
                    bias=c.bias is not None, padding_mode=c.padding_mode, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if c.bias is not None:
            new.bias.copy_(c.bias.detach() if out_idx is None else c.bias.detach()[out_idx])
    return new


def _bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(bn, name) is not None:
                getattr(new, name).copy_(getattr(bn, name).detach()[idx])
    return new.to(bn.weight.device if bn.weight is not None else "cpu").eval()


@torch.no_grad()
def prune_conv_chain(model: nn.Module, amount: float, round_to: int) -> list[str]:
    """For each dense conv whose consumers form conv → BN → act → [depthwise conv → BN → act] →
    dense conv | Linear (leaf modules in registration order, as in MobileNet-style chains), drop
    its weakest filters and slice every consumer. Returns "name:old→new" per pruned conv."""
    def leaf_list() -> list[tuple[str, nn.Module]]:  # same names and order after every swap
        return [(n, m) for n, m in model.named_modules() if not list(m.children())]

    leaves, done = leaf_list(), []
    for i in range(len(leaves)):
        name, conv = leaves[i]
        if not (isinstance(conv, nn.Conv2d) and conv.groups == 1):
            continue
        chain, j = [], i + 1
        while j < len(leaves) and (isinstance(leaves[j][1], (nn.BatchNorm2d, *_PASS))
                                   or (isinstance(leaves[j][1], nn.Conv2d) and leaves[j][1].groups == conv.out_channels
                                       == leaves[j][1].in_channels == leaves[j][1].out_channels)):
            chain.append(leaves[j])
            j += 1
        if j == len(leaves):
            continue
        cname, consumer = leaves[j]
        if not ((isinstance(consumer, nn.Conv2d) and consumer.groups == 1 and consumer.in_channels == conv.out_channels)
                or (isinstance(consumer, nn.Linear) and consumer.in_features == conv.out_channels)):
            continue
        bn = next((m for _, m in chain if isinstance(m, nn.BatchNorm2d)), None)
        score = conv.weight.detach().abs().flatten(1).sum(1)  # (out,) L1 of each filter
        if bn is not None and bn.weight is not None:
            score = score * (bn.weight.abs() / (bn.running_var + bn.eps).sqrt())
        k = kept_count(conv.out_channels, amount, round_to)
        if k == conv.out_channels:
            continue
        keep = top_channels(score, k)
        set_module(model, name, _conv(conv, keep, None))
        for n, m in chain:
            if isinstance(m, nn.BatchNorm2d):
                set_module(model, n, _bn(m, keep))
            elif isinstance(m, nn.Conv2d):
                set_module(model, n, _conv(m, keep, None, depthwise=True))
        set_module(model, cname, _conv(consumer, None, keep) if isinstance(consumer, nn.Conv2d)
             else _slice_linear(consumer, cols=keep))
        leaves = leaf_list()
        done.append(f"{name}:{conv.out_channels}→{k}")
    return done


@register
class StructuredPruning(Technique):
    name = "structured_pruning"
    summary = "remove whole MLP channels / conv filters so Linear and conv shapes really shrink"
    Config = StructuredPruningConfig
    tasks = frozenset({"causal_lm", "vision"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.status == "refused" and target.task == "encoder":
            return Verdict("refused", "structured_pruning supports gated (Llama-style) MLPs and sequential CNNs; "
                                      "encoder MLPs are not handled yet")
        return verdict

    def apply(self, workload: Workload, config: StructuredPruningConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        meta = {}
        if mlps := gated_mlps(model):
            old = mlps[0].gate_proj.out_features
            k = kept_count(old, config.amount, config.round_to)
            for mlp in mlps:
                prune_gated_mlp(mlp, k)
            if getattr(model, "config", None) is not None and hasattr(model.config, "intermediate_size"):
                model.config.intermediate_size = k
            if "config" in workload.meta:
                meta["config"] = {**workload.meta["config"], "intermediate_size": k}
            notes = [f"{len(mlps)} gated MLPs: intermediate_size {old} → {k} (kept by √(‖gate_j‖²+‖up_j‖²))"]
        elif done := prune_conv_chain(model, config.amount, config.round_to):
            notes = [f"conv filters removed (L1 × BN scale): {', '.join(done)}"]
        else:
            raise ValueError("structured_pruning found no gated MLP (gate_proj/up_proj/down_proj) and no "
                             "conv → BN → conv/Linear chain to shrink in this model")
        if workload.calibration:  # the surgery must leave a runnable model
            with torch.no_grad():
                batch = workload.calibration[0]
                model(**batch) if isinstance(batch, dict) else model(batch.to(next(model.parameters()).device))
        notes.append("tensors physically shrink: stored bytes and dense compute drop; fine-tune to recover quality")
        return StepRecord(workload.with_model(model, **meta), notes=notes)
