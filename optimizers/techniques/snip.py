"""SNIP (Lee, Ajanthan & Torr, Single-shot Network Pruning based on Connection Sensitivity, ICLR
2019): score every connection once by |∂L/∂W ⊙ W| on one training batch (eq. 6), keep the top
(1 − sparsity) over all layers, then train with that mask fixed. Applied here to the workload's
model (a pretrained one: pruning at "initialization" of the fine-tune)."""
from __future__ import annotations

from typing import Any

import torch

from optimizers import sparsity as S
from optimizers.base import StepRecord
from optimizers.registry import register
from optimizers.training import sparse
from optimizers.training.data import train_batches
from optimizers.training.loop import task_loss, to_device
from optimizers.training.transform import (SparseBudget, TrainingTransform, fit, record, sparse_result, sparse_start,
                                           teacher_hooks)
from optimizers.workloads.base import Workload


@register
class Snip(TrainingTransform):
    name = "snip"
    needs_linear = True
    summary = "prune once by connection sensitivity |∂L/∂W·W| on one batch, then train with the mask fixed"
    Config = SparseBudget

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        start, csr = sparse_start(workload.model)
        batch = to_device(train_batches(workload, 1, config.batch_size, config.seq_len, config.seed + 1)[0],
                          workload.device)  # another seed than the training order: scored, not trained on first
        for p in start.parameters():
            p.requires_grad_(p.is_floating_point())
        start.eval()
        masks = sparse.snip_masks(start, task_loss(start, batch, workload.task), config.sparsity, config.include_lm_head)
        layers = dict(sparse.prunable(start, config.include_lm_head))
        with torch.no_grad():
            for n, keep in masks.items():
                S.apply_mask(layers[n], keep)
        model, figures, details = fit(workload, config, start=start,
                                      hooks=(*teacher_hooks(workload, config), sparse.MaskedTraining(masks)))
        notes, diag = sparse_result(model, config, csr)
        notes.insert(0, f"mask from one batch's connection sensitivity at {config.sparsity:.0%} (global), fixed while "
                        "training")
        return record(workload, model, config, figures, details, notes, diag | {"sparsity_target": config.sparsity})
