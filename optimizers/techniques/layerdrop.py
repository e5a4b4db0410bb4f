"""LayerDrop (Fan, Grave & Joulin, Reducing Transformer Depth on Demand with Structured Dropout,
ICLR 2020): fine-tune with each transformer block skipped (identity) with probability ``p`` per
batch, so the network learns not to rely on any one block; then prune blocks at inference — here
every other one (the paper's "every other" strategy), half the depth. With ``control`` the same
blocks are dropped from the same model fine-tuned on the same batches without LayerDrop, so what
the regularizer bought is measured."""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from optimizers import measure as H
from optimizers.base import StepRecord
from optimizers.registry import register
from optimizers.training.distill import blocks, every_second_layer
from optimizers.training.loop import TrainHook
from optimizers.training.transform import TrainBudget, TrainingTransform, control_run, fit, record
from optimizers.workloads.base import Workload


class LayerdropConfig(TrainBudget):
    p: float = Field(0.2, gt=0, lt=1, description="probability a block is skipped in a training batch (paper: 0.2)")
    control: bool = Field(True, description="also prune the same blocks from the model fine-tuned without LayerDrop "
                                            "on the same batches")


class SkippableBlock(nn.Module):
    """A block that, in training mode, returns its input unchanged with probability ``p``."""

    def __init__(self, block: nn.Module, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.block, self.p, self.generator = block, p, generator

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.training and float(torch.rand((), generator=self.generator)) < self.p:
            return hidden_states
        return self.block(hidden_states, *args, **kwargs)


class LayerDropHook(TrainHook):
    def __init__(self, p: float, seed: int) -> None:
        self.p, self.generator = p, torch.Generator().manual_seed(seed)

    def on_start(self, model: nn.Module) -> None:
        owner, attr, lst = blocks(model)
        setattr(owner, attr, nn.ModuleList(SkippableBlock(b, self.p, self.generator) for b in lst))


def unwrap(model: nn.Module) -> nn.Module:
    owner, attr, lst = blocks(model)
    setattr(owner, attr, nn.ModuleList(b.block if isinstance(b, SkippableBlock) else b for b in lst))
    return model


@register
class Layerdrop(TrainingTransform):
    name = "layerdrop"
    summary = "fine-tune with blocks randomly skipped (LayerDrop), then prune every other block"
    Config = LayerdropConfig
    tasks = frozenset({"causal_lm"})  # Llama-style blocks return their hidden states alone, so a skip is the identity

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        blocks(workload.model)  # a clear error for a model without a block list, before training
        trained, figures, details = fit(workload, config, hooks=(LayerDropHook(config.p, config.seed),))
        pruned = every_second_layer(unwrap(trained)).eval()
        n = workload.model.config.num_hidden_layers
        notes = [f"fine-tuned with each of the {n} blocks skipped with p = {config.p:g} per batch, then blocks "
                 f"{list(range(1, n, 2))} removed: {pruned.config.num_hidden_layers} of {n} kept"]
        diag: dict[str, float] = {"blocks_kept": float(pruned.config.num_hidden_layers), "blocks_before": float(n)}
        diag |= {f"untrained_pruned_{k}": v for k, v in H.quality(workload.with_model(every_second_layer(
            workload.model).eval())).items()}
        if config.control:
            control_run(workload, config, "the same fine-tune without LayerDrop, the same blocks removed; "
                        "untrained_pruned_*: the blocks removed from the model as it was", notes, diag, details,
                        then=lambda m: every_second_layer(m).eval())
        meta = {"config": {**workload.meta["config"], "num_hidden_layers": pruned.config.num_hidden_layers}} \
            if "config" in workload.meta else {}
        return record(workload, pruned, config, figures, details, notes, diag, **meta)
