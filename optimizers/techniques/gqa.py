"""Grouped-query attention by conversion (Ainslie et al., GQA: Training Generalized Multi-Query
Transformer Models from Multi-Head Checkpoints, EMNLP 2023): the K and V projection heads of each
group are mean-pooled into one (§2.1: mean pooling beats keeping the first head or random init),
every query head of the group reads it, then the model is uptrained briefly (the paper: ~5 % of
the pretraining steps) — here with the task's loss, or distilled from the model before conversion.
The KV cache shrinks by the ratio of KV heads; the inference scenario measures it per token."""
from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field
from torch import nn

from optimizers.base import StepRecord, Target, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.training.distill import Distiller
from optimizers.training.transform import TrainBudget, TrainingTransform, fit, record
from optimizers.workloads.base import Workload


class GqaConfig(TrainBudget):
    kv_heads: int | None = Field(None, ge=1, le=1024, description="KV heads after conversion; must divide the "
                                                                  "model's (default: a model with GQA keeps it, a "
                                                                  "multi-head one gets a quarter as many KV heads)")
    convert: bool = Field(True, description="false: only check the model has grouped K/V heads (a lossless "
                                            "playbook asks for a GQA model, not for a lossy conversion)")
    uptrain: bool = Field(True, description="uptrain after pooling (false: measure the pooled model as it is)")
    distill: bool = Field(True, description="uptrain on the model-before-conversion's softened logits + the "
                                            "task's loss (false: the task's loss alone)")
    temperature: float = Field(2.0, gt=0, le=100, description="distillation temperature (distill=true)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's soft targets (distill=true)")


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """Llama-style attention modules: k_proj, v_proj as nn.Linear and ``num_key_value_groups``."""
    return [m for m in model.modules() if hasattr(m, "num_key_value_groups")
            and isinstance(getattr(m, "k_proj", None), nn.Linear) and isinstance(getattr(m, "v_proj", None), nn.Linear)]


def _pool(lin: nn.Linear, heads: int, groups: int, head_dim: int) -> nn.Linear:
    """A projection of ``heads`` output heads → ``groups`` heads, each the mean of its group's."""
    w = lin.weight.detach().reshape(groups, heads // groups, head_dim, lin.in_features).mean(1)
    new = nn.Linear(lin.in_features, groups * head_dim, bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w.reshape(groups * head_dim, lin.in_features))
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach().reshape(groups, heads // groups, head_dim).mean(1).reshape(-1))
    return new


def convert(model: nn.Module, kv_heads: int) -> tuple[nn.Module, int]:
    """A copy of ``model`` with ``kv_heads`` KV heads by mean pooling; returns it and the old count."""
    layers = attention_layers(model)
    cfg = getattr(model, "config", None)
    if not layers or cfg is None or not hasattr(cfg, "num_key_value_heads"):
        raise ValueError(f"{type(model).__name__} has no Llama-style attention (k_proj / v_proj nn.Linear, "
                         "num_key_value_heads) to convert; a quantized model's projections cannot be pooled — "
                         "convert before quantizing")
    old, q_heads = int(cfg.num_key_value_heads), int(cfg.num_attention_heads)
    if kv_heads >= old or old % kv_heads:
        raise ValueError(f"kv_heads={kv_heads} must be fewer than the model's {old} KV heads and divide them "
                         f"(choose from {[d for d in range(1, old) if old % d == 0]})")
    model = copy.deepcopy(model)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // q_heads)
    for attn in attention_layers(model):
        attn.k_proj = _pool(attn.k_proj, old, kv_heads, head_dim)
        attn.v_proj = _pool(attn.v_proj, old, kv_heads, head_dim)
        attn.num_key_value_groups = q_heads // kv_heads
    model.config.num_key_value_heads = kv_heads
    return model, old


@register
class Gqa(TrainingTransform):
    name = "gqa"
    summary = "mean-pool K/V heads into fewer groups, then uptrain briefly (Ainslie et al.): a smaller KV cache"
    Config = GqaConfig
    tasks = frozenset({"causal_lm"})

    def kv_heads(self, config: Any, q_heads: int) -> int:
        """KV heads after conversion: the config's, or a quarter of the query heads (rounded to a divisor)."""
        if config.kv_heads is not None:
            return config.kv_heads
        return max(d for d in range(1, max(1, q_heads // 4) + 1) if q_heads % d == 0)

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable or target.attention_heads is None or config is None:
            return verdict
        q, kv = target.attention_heads
        if kv == 1:
            return Verdict("advice_only", "already in the model (one K/V head)")
        if config.kv_heads is None and kv < q:
            return Verdict("advice_only", f"already in the model ({kv} K/V heads for {q} query heads)")
        if not config.convert:
            return Verdict("advice_only", f"the model has {kv} K/V heads for {q} query heads; this step asks for a "
                                          "GQA model, and converting one (mean-pooling + uptraining) changes outputs")
        want = self.kv_heads(config, q)
        if want >= kv or kv % want:
            return Verdict("refused", f"kv_heads={want} must be fewer than the model's {kv} K/V heads and divide "
                                      f"them (choose from {[d for d in range(1, kv) if kv % d == 0]})", blame="config")
        if target.quantized:
            return Verdict("refused", f"{self.name} pools nn.Linear K/V projections; an earlier step quantized them "
                                      "(convert first, then quantize)")
        return verdict

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        model, old = convert(workload.model, self.kv_heads(config, workload.model.config.num_attention_heads))
        new = model.config.num_key_value_heads
        notes = [f"{old} → {new} KV heads per layer (each group's K and V heads mean-pooled): KV cache ×{new / old:.3g}"]
        diag = {"kv_heads_before": float(old), "kv_heads": float(new)}
        meta = {"config": {**workload.meta["config"], "num_key_value_heads": new}} if "config" in workload.meta else {}
        if not config.uptrain:
            return StepRecord(workload.with_model(model.eval(), **meta), notes=notes + ["not uptrained"],
                              diagnostics=diag)
        hooks = (Distiller(workload.model, config.temperature, config.alpha),) if config.distill else ()
        if config.distill:
            notes.append(f"uptrained on the unconverted model's softened logits (T = {config.temperature:g}, "
                         f"α = {config.alpha:g}) and the task's loss")
        model, figures, details = fit(workload, config, start=model, hooks=hooks)
        return record(workload, model, config, figures, details, notes, diag, **meta)
