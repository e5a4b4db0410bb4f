"""Lottery tickets with rewinding (Frankle & Carbin, ICLR 2019; Frankle et al., Linear Mode
Connectivity and the Lottery Ticket Hypothesis, ICML 2020): train, prune the smallest-magnitude
weights of the trained model, rewind the survivors to their values at step ``rewind_step`` (0: the
starting weights) and train again with the mask fixed. Here one round, from the workload's model."""
from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field

from optimizers import sparsity as S
from optimizers.base import StepRecord
from optimizers.registry import register
from optimizers.training import sparse
from optimizers.training.loop import TrainHook
from optimizers.training.transform import (SparseBudget, TrainingTransform, fit, record, sparse_result, sparse_start,
                                           teacher_hooks)
from optimizers.workloads.base import Workload


class LotteryTicketConfig(SparseBudget):
    rewind_step: int = Field(0, ge=0, description="rewind the surviving weights to their values after this many "
                                                  "steps of the first training (0: the starting weights)")


class Snapshot(TrainHook):
    """The prunable layers' weights after step ``at`` (``at`` = 0: at the start)."""

    def __init__(self, at: int, include_lm_head: bool) -> None:
        self.at, self.include_lm_head, self.weights = at, include_lm_head, {}

    def _take(self, model: torch.nn.Module) -> None:
        self.weights = {n: m.weight.detach().clone() for n, m in sparse.prunable(model, self.include_lm_head)}

    def on_start(self, model: torch.nn.Module) -> None:
        if self.at == 0:
            self._take(model)

    def after_step(self, model: torch.nn.Module, k: int) -> None:
        if k + 1 == self.at:
            self._take(model)


@register
class LotteryTicket(TrainingTransform):
    name = "lottery_ticket"
    needs_linear = True
    summary = "train, prune by magnitude, rewind the survivors and retrain with the mask (one round)"
    Config = LotteryTicketConfig

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        if config.rewind_step >= config.steps:
            raise ValueError(f"rewind_step={config.rewind_step} must be below steps={config.steps}")
        start, csr = sparse_start(workload.model)
        snap = Snapshot(config.rewind_step, config.include_lm_head)
        dense, first, _ = fit(workload, config, start=start, hooks=(snap,))
        masks = sparse.global_topk_masks({n: m.weight.detach().abs() for n, m in
                                          sparse.prunable(dense, config.include_lm_head)}, config.sparsity)
        ticket = copy.deepcopy(dense)
        layers = dict(sparse.prunable(ticket, config.include_lm_head))
        with torch.no_grad():
            for n, keep in masks.items():
                layers[n].weight.copy_(snap.weights[n])
                S.apply_mask(layers[n], keep)
        model, figures, details = fit(workload, config, start=ticket,
                                      hooks=(*teacher_hooks(workload, config), sparse.MaskedTraining(masks)))
        notes, diag = sparse_result(model, config, csr)
        notes.insert(0, f"round 1: {config.steps} dense steps, then {config.sparsity:.0%} global magnitude mask of the "
                        f"trained weights, survivors rewound to step {config.rewind_step}, {config.steps} masked steps")
        diag |= {"sparsity_target": config.sparsity, "dense_eval_loss": first["eval_loss"],
                 "train_steps": float(2 * config.steps)}
        return record(workload, model, config, figures, details, notes, diag)
