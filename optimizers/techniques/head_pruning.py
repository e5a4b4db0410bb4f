"""Attention-head pruning: remove whole heads by importance and shrink the projections, so the
model is physically smaller and every attention layer does less work (Michel, Levy & Neubig,
Are Sixteen Heads Really Better than One?, NeurIPS 2019; Voita et al. 2019).

Importance: ``gradient`` is Michel et al.'s I_h = E_x |∂L/∂ξ_h|, ξ_h a gate (= 1) on head h's
output, over calibration batches of a causal LM's own next-token loss, normalised per layer by
its L2 norm (their §4.2, which makes global ranking work); ``activation`` is the mean norm of
what the head adds to the residual stream, ‖o_proj[:, h] · head_h(x)‖ (for encoders, which have
no loss of their own here). Grouped-query aware: in a GQA model each K/V head serves a group of
query heads, so ``unit`` chooses query heads (the same number kept in every group of a layer,
K/V untouched) or whole K/V groups (the K/V head with its query heads; this also shrinks the
KV cache). Multi-head attention is the group-of-one case. Llama-style (q/k/v/o_proj) and BERT
(query/key/value + output.dense) attention."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.quant.calibrate import require_calibration, run_batch
from optimizers.registry import register
from optimizers.workloads.base import Workload


class HeadPruningConfig(TechniqueConfig):
    amount: float = Field(0.25, ge=0.0, lt=1.0, description="fraction of attention heads removed (of K/V groups with unit=kv_group)")
    unit: Literal["auto", "query", "kv_group"] = Field(
        "auto", description="auto: query heads in a GQA model, whole heads in multi-head attention; kv_group: a K/V head with its queries")
    importance: Literal["auto", "gradient", "activation"] = Field(
        "auto", description="gradient: Michel et al.'s |∂L/∂gate| (causal LMs); activation: mean output norm; auto picks by task")
    scope: Literal["global", "layer"] = Field("global", description="rank heads over all layers (normalised per layer) or within each layer")
    calibration_batches: int = Field(8, ge=1, description="calibration batches the importance is averaged over")


@dataclass
class _Attn:
    """One attention layer: its projections and head layout."""
    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    head_dim: int

    @property
    def heads(self) -> int:
        return self.q.out_features // self.head_dim

    @property
    def kv_heads(self) -> int:
        return self.k.out_features // self.head_dim


def attention_layers(model: nn.Module) -> list[_Attn]:
    """Llama-style (q_proj … o_proj, ``head_dim``) and BERT (self.query … output.dense) attention."""
    found = []
    for m in model.modules():
        if all(isinstance(getattr(m, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) and hasattr(m, "head_dim"):
            found.append(_Attn(m, m.q_proj, m.k_proj, m.v_proj, m.o_proj, int(m.head_dim)))
        elif hasattr(m, "self") and hasattr(m, "output") and hasattr(m.self, "attention_head_size") \
                and isinstance(getattr(m.output, "dense", None), nn.Linear):
            s = m.self
            found.append(_Attn(s, s.query, s.key, s.value, m.output.dense, int(s.attention_head_size)))
    return found


def _gated(layers: list[_Attn], gates: list[torch.Tensor]) -> list:
    """Pre-hooks multiplying each head's output (the o-projection's input) by its gate."""
    def hook(gate: torch.Tensor, d: int):
        return lambda _m, args: (args[0] * gate.repeat_interleave(d).to(args[0].dtype),) + tuple(args[1:])
    return [a.o.register_forward_pre_hook(hook(g, a.head_dim)) for a, g in zip(layers, gates)]


def gradient_importance(model: nn.Module, layers: list[_Attn], batches: list) -> list[torch.Tensor]:
    """Michel et al. 2019: I_h = mean over batches of |∂L/∂ξ_h| at ξ = 1, L the LM loss."""
    gates = [torch.ones(a.heads, device=a.o.weight.device, requires_grad=True) for a in layers]
    total = [torch.zeros(a.heads, device=a.o.weight.device) for a in layers]
    handles = _gated(layers, gates)
    try:
        with torch.enable_grad():
            for b in batches:
                ids = b["input_ids"] if isinstance(b, dict) else b
                loss = model(input_ids=ids, labels=ids).loss
                grads = torch.autograd.grad(loss, gates)
                for t, g in zip(total, grads):
                    t += g.abs()
    finally:
        for h in handles:
            h.remove()
    return [t / len(batches) for t in total]


def activation_importance(model: nn.Module, layers: list[_Attn], batches: list) -> list[torch.Tensor]:
    """Mean over tokens of ‖o[:, h] · head_h(x)‖₂: what each head writes into the residual stream."""
    total = [torch.zeros(a.heads, device=a.o.weight.device) for a in layers]
    tokens = [0] * len(layers)

    def hook(i: int, a: _Attn):
        w = a.o.weight.detach().float().reshape(a.o.out_features, a.heads, a.head_dim)  # (hidden, H, d)

        def on(_m, args):
            x = args[0].detach().float().reshape(-1, a.heads, a.head_dim)  # (tokens, H, d)
            total[i].add_(torch.einsum("thd,ohd->tho", x, w).norm(dim=-1).sum(0))
            tokens[i] += x.shape[0]
        return on
    handles = [a.o.register_forward_pre_hook(hook(i, a)) for i, a in enumerate(layers)]
    try:
        with torch.no_grad():
            for b in batches:
                run_batch(model, b)
    finally:
        for h in handles:
            h.remove()
    return [t / max(n, 1) for t, n in zip(total, tokens)]


def choose(scores: list[torch.Tensor], groups: list[int], amount: float, unit: str, scope: str) -> list[list[int]]:
    """Head indices kept per layer. ``groups[i]`` = query heads per K/V head of layer i. Query unit:
    the same number kept in every group (the layout repeat_kv needs); kv_group: whole groups."""
    per_unit = [s.reshape(-1, g).sum(-1) if unit == "kv_group" else s for s, g in zip(scores, groups)]
    if scope == "global":
        normed = [u / u.norm().clamp(min=1e-12) for u in per_unit]
        flat = torch.cat(normed)
        n_drop = int(amount * flat.numel())
        threshold = flat.sort().values[n_drop - 1] if n_drop else -math.inf
        drops = [int((u <= threshold).sum()) for u in normed]
    else:
        drops = [int(amount * u.numel()) for u in per_unit]
    kept = []
    for s, g, u, drop in zip(scores, groups, per_unit, drops):
        if unit == "kv_group":
            keep_groups = u.argsort(descending=True)[: max(1, u.numel() - drop)].sort().values
            kept.append([int(k) * g + j for k in keep_groups for j in range(g)])
        else:  # drop the same number from each group, least important first, ≥ 1 kept per group
            n_groups = s.numel() // g
            per_group = min(drop // n_groups, g - 1)
            by_group = s.reshape(n_groups, g)
            kept.append(sorted(int(k) * g + int(j) for k in range(n_groups)
                               for j in by_group[k].argsort(descending=True)[: g - per_group]))
    return kept


def _index(lin: nn.Linear, heads: list[int], d: int) -> torch.Tensor:
    return torch.tensor([h * d + j for h in heads for j in range(d)], device=lin.weight.device)


def _rows(lin: nn.Linear, heads: list[int], d: int) -> None:
    idx = _index(lin, heads, d)
    lin.weight = nn.Parameter(lin.weight.detach()[idx].clone())
    if lin.bias is not None:
        lin.bias = nn.Parameter(lin.bias.detach()[idx].clone())
    lin.out_features = len(idx)


def _cols(lin: nn.Linear, heads: list[int], d: int) -> None:
    idx = _index(lin, heads, d)
    lin.weight = nn.Parameter(lin.weight.detach()[:, idx].clone())
    lin.in_features = len(idx)


def shrink(a: _Attn, keep: list[int], unit: str) -> None:
    """Physically remove the heads not in ``keep`` from one attention layer."""
    g = a.heads // a.kv_heads
    kv_keep = sorted({h // g for h in keep}) if unit == "kv_group" else list(range(a.kv_heads))
    _rows(a.q, keep, a.head_dim)
    _cols(a.o, keep, a.head_dim)
    if a.kv_heads != a.heads or unit == "kv_group":
        _rows(a.k, kv_keep, a.head_dim)
        _rows(a.v, kv_keep, a.head_dim)
    if hasattr(a.module, "num_key_value_groups"):
        a.module.num_key_value_groups = len(keep) // len(kv_keep)
    if hasattr(a.module, "num_attention_heads"):  # BERT
        a.module.num_attention_heads = len(keep)
        a.module.all_head_size = len(keep) * a.head_dim


@register
class HeadPruning(Technique):
    name = "head_pruning"
    needs_calibration = True
    tasks = frozenset({"causal_lm", "encoder"})
    summary = "remove whole attention heads by Michel et al.'s gradient importance (GQA-aware), projections shrunk"
    Config = HeadPruningConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        if target.attention_heads is None:
            return Verdict("refused", "head_pruning needs a transformers attention model (heads in its config); this one has none")
        q, kv = target.attention_heads
        unit = getattr(config, "unit", "auto")
        if unit == "kv_group" and kv == 1:
            return Verdict("refused", "the model has one K/V head (MQA): no K/V group can go; use unit='query'", blame="config")
        if unit == "query" and q == kv:
            return Verdict("refused", "multi-head attention (one K/V head per query head): use unit='auto' or 'kv_group'",
                           blame="config")
        if getattr(config, "importance", "auto") == "gradient" and target.task == "encoder":
            return Verdict("refused", "gradient importance needs the model's own loss; an encoder has none here: "
                                      "use importance='activation'", blame="config")
        return verdict

    def apply(self, workload: Workload, config: HeadPruningConfig) -> StepRecord:
        require_calibration(workload.calibration, self.name)
        model = copy.deepcopy(workload.model).eval()
        layers = attention_layers(model)
        if not layers:
            raise ValueError("head_pruning found no Llama-style (q/k/v/o_proj) or BERT attention layer to prune")
        batches = workload.calibration[: config.calibration_batches]
        importance = config.importance if config.importance != "auto" else (
            "gradient" if workload.task == "causal_lm" else "activation")
        scores = (gradient_importance if importance == "gradient" else activation_importance)(model, layers, batches)
        mha = all(a.heads == a.kv_heads for a in layers)
        unit = config.unit if config.unit != "auto" else ("kv_group" if mha else "query")
        kept = choose(scores, [a.heads // a.kv_heads for a in layers], config.amount, unit, config.scope)
        before_heads, before_kv = sum(a.heads for a in layers), sum(a.kv_heads for a in layers)
        before_params = sum(p.numel() for p in model.parameters())
        for a, keep in zip(layers, kept):
            shrink(a, keep, unit)
        layers = attention_layers(model)
        heads, kv = [a.heads for a in layers], [a.kv_heads for a in layers]
        cfg = getattr(model, "config", None)
        if cfg is not None and len(set(heads)) == 1 and len(set(kv)) == 1:  # uniform: the config tells the truth again
            if hasattr(cfg, "num_key_value_heads"):
                cfg.head_dim = layers[0].head_dim
                cfg.num_key_value_heads = kv[0]
            cfg.num_attention_heads = heads[0]
        after_params = sum(p.numel() for p in model.parameters())
        notes = [f"{importance} importance over {len(batches)} calibration batches ({config.scope} ranking, unit {unit}): "
                 f"query heads {before_heads} → {sum(heads)}, K/V heads {before_kv} → {sum(kv)}; per layer {heads}",
                 f"parameters {before_params:,} → {after_params:,} (attention projections physically shrunk)"]
        if len(set(heads)) > 1:
            notes.append("layers keep different head counts: the model config keeps the original counts "
                         "(each layer's modules hold the truth)")
        if unit == "query" and not mha:
            notes.append("K/V heads kept (query heads only): the KV cache is unchanged; unit='kv_group' shrinks it")
        details = {"head_importance": {str(i): [round(float(x), 6) for x in s] for i, s in enumerate(scores)},
                   "heads_kept": {str(i): k for i, k in enumerate(kept)}}
        diagnostics = {"heads_before": float(before_heads), "heads_after": float(sum(heads)),
                       "kv_heads_before": float(before_kv), "kv_heads_after": float(sum(kv))}
        return StepRecord(workload.with_model(model), notes=notes, details=details, diagnostics=diagnostics)
