"""Sparse upcycling (Komatsuzaki et al., Sparse Upcycling: Training Mixture-of-Experts from Dense
Checkpoints, ICLR 2023): every gated MLP of a dense Llama-style model becomes ``experts`` copies of
itself behind a freshly initialised router that sends each token to its top-``top_k`` experts,
weights renormalised to sum to one — so before training the model computes exactly what the dense
one did — then a short training with the Switch load-balancing loss (Fedus et al. 2022) lets the
experts diverge. Measured: total parameters (capacity) against those active per token, the experts'
load, and the quality after training beside the dense model fine-tuned on the same batches."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from optimizers import measure as H
from optimizers.base import StepRecord, Target, TechniqueConfig, Verdict
from optimizers.quant.modules import set_module
from optimizers.registry import register
from optimizers.techniques.structured_pruning import gated_mlps
from optimizers.training.loop import TrainHook, task_loss
from optimizers.training.transform import TrainBudget, TrainingTransform, control_run, fit, record
from optimizers.workloads.base import Workload


class MoeUpcyclingConfig(TrainBudget):
    experts: int = Field(4, ge=2, le=256, description="experts per MLP (copies of the dense MLP)")
    top_k: int = Field(2, ge=1, le=16, description="experts each token is routed to (the paper's decoders: 2)")
    aux_loss: float = Field(0.01, ge=0, le=1, description="weight of the Switch load-balancing loss")
    control: bool = Field(True, description="also fine-tune the dense model on the same batches (the comparison)")


class UpcycledMoE(nn.Module):
    """``experts`` copies of a dense MLP behind a top-k router; ``aux_loss`` holds the last forward's
    load-balancing term E·Σ_e f_e·P_e (f: fraction of tokens whose first choice is e, P: mean router
    probability of e), ``load`` the fraction of routed slots each expert took."""

    def __init__(self, mlp: nn.Module, experts: int, top_k: int, hidden: int, seed: int = 0) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k={top_k} must be in 1..experts={experts}")
        self.experts = nn.ModuleList(copy.deepcopy(mlp) for _ in range(experts))
        weight = next(mlp.parameters())
        self.router = nn.Linear(hidden, experts, bias=False, device=weight.device, dtype=weight.dtype)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.router.weight.copy_(torch.randn(self.router.weight.shape, generator=g) * 0.02)
        self.top_k = top_k
        self.aux_loss = torch.zeros(())
        self.register_buffer("load", torch.zeros(experts), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        probs = torch.softmax(self.router(flat).float(), -1)  # (N, E)
        weights, idx = probs.topk(self.top_k, dim=-1)  # (N, k)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(flat)
        n_exp = len(self.experts)
        for e, expert in enumerate(self.experts):
            token, slot = (idx == e).nonzero(as_tuple=True)
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * weights[token, slot, None])
        first = F.one_hot(idx[:, 0], n_exp).float().mean(0)
        self.aux_loss = n_exp * (first * probs.mean(0)).sum()
        with torch.no_grad():
            self.load.copy_(F.one_hot(idx, n_exp).float().sum((0, 1)) / idx.numel())
        return out.reshape_as(x)


def upcycle(model: nn.Module, experts: int, top_k: int, seed: int = 0) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every gated MLP upcycled; returns it and the MLPs replaced."""
    model = copy.deepcopy(model)
    names = [n for n, m in model.named_modules() if m in set(gated_mlps(model))]
    if not names:
        raise ValueError("moe_upcycling copies gated MLPs (gate_proj / up_proj / down_proj); this model has none")
    hidden = model.config.hidden_size
    for i, n in enumerate(names):
        set_module(model, n, UpcycledMoE(model.get_submodule(n), experts, top_k, hidden, seed + i))
    return model, len(names)


class BalanceLoss(TrainHook):
    """The task's loss plus ``coef`` × the mean load-balancing term of the MoE layers."""

    def __init__(self, coef: float) -> None:
        self.coef = coef

    def loss(self, model: nn.Module, batch: Any, task: str) -> torch.Tensor:
        loss = task_loss(model, batch, task)
        aux = [m.aux_loss for m in model.modules() if isinstance(m, UpcycledMoE)]
        return loss + self.coef * torch.stack(aux).mean() if aux and self.coef else loss


def active_params(model: nn.Module, top_k: int) -> int:
    """Parameters a token passes through: all but the experts it is not routed to."""
    total = H.parameter_count(model)
    unused = sum(sum(p.numel() for p in m.experts[0].parameters()) * (len(m.experts) - top_k)
                 for m in model.modules() if isinstance(m, UpcycledMoE))
    return total - unused


@register
class MoeUpcycling(TrainingTransform):
    name = "moe_upcycling"
    summary = "copy each dense MLP into N experts behind a top-k router, then train briefly (sparse upcycling)"
    Config = MoeUpcyclingConfig
    tasks = frozenset({"causal_lm"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and config is not None and config.top_k > config.experts:
            return Verdict("refused", f"top_k={config.top_k} exceeds experts={config.experts}", blame="config")
        return verdict

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        moe, n = upcycle(workload.model, config.experts, config.top_k, config.seed)
        model, figures, details = fit(workload, config, start=moe, hooks=(BalanceLoss(config.aux_loss),))
        model.eval()
        total, active = H.parameter_count(model), active_params(model, config.top_k)
        with torch.no_grad():  # the experts' load on the first held-out window
            model(input_ids=workload.eval.token_ids[: workload.eval.window][None].to(workload.device))
        loads = torch.stack([m.load for m in model.modules() if isinstance(m, UpcycledMoE)]).mean(0)
        diag = {"params_total": float(total), "params_active_per_token": float(active),
                "params_dense": float(H.parameter_count(workload.model)),
                "expert_load_max": float(loads.max()), "expert_load_min": float(loads.min())}
        notes = [f"{n} gated MLPs → {config.experts} experts each, top-{config.top_k} routing: {total:,} parameters, "
                 f"{active:,} active per token (the dense model: {H.parameter_count(workload.model):,})",
                 f"expert load on a held-out window: {', '.join(f'{x:.0%}' for x in loads.tolist())} of the routed slots"]
        if config.control:
            control_run(workload, config, "the dense model fine-tuned on the same batches", notes, diag, details)
        return record(workload, model, config, figures, details, notes, diag)
