"""Cross-layer parameter sharing (Lan et al., ALBERT: A Lite BERT for Self-supervised Learning of
Language Representations, ICLR 2020, §3.1) applied to a trained model, where that is honest: the
transformer blocks (Llama-style ``model.layers``, BERT-style ``encoder.layer``) are split into runs of
consecutive blocks, and every block of a run uses the same Parameter objects, set to the mean of the
run's weights — stored once. ALBERT pretrains with sharing; averaging trained blocks costs quality, so
the cost is measured here and a recovery_finetune step after this one trains the shared weights.
Each block stays its own module (its own KV-cache index), only the tensors are shared.

Sample playbook step::

    - technique: albert_sharing
      params: {groups: 2, share: null}
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.measure import parameter_count, stored_bytes
from optimizers.registry import register
from optimizers.training.distill import blocks
from optimizers.workloads.base import Workload

CAVEAT = "averaging trained blocks costs quality; ALBERT pretrains with sharing — follow with recovery_finetune to recover"


class AlbertSharingConfig(TechniqueConfig):
    groups: int | None = Field(None, ge=1, description="distinct blocks kept: the blocks split into this many runs "
                                                       "of consecutive blocks (as even as possible); set groups or share")
    share: Literal["all", "adjacent_pairs"] | None = Field(
        "adjacent_pairs", description="all: one block for the whole stack (ALBERT's choice); adjacent_pairs: blocks "
                                      "(0, 1), (2, 3), … share")

    @model_validator(mode="after")
    def _one_rule(self) -> "AlbertSharingConfig":
        if (self.groups is None) == (self.share is None):
            raise ValueError("set exactly one of groups or share (e.g. {'groups': 2, 'share': null})")
        return self

    def distinct(self, n_blocks: int) -> int:
        if self.groups is not None:
            return self.groups
        return 1 if self.share == "all" else (n_blocks + 1) // 2


def runs(n_blocks: int, groups: int) -> list[list[int]]:
    """``groups`` runs of consecutive block indices covering 0..n_blocks-1, sizes differing by at most one."""
    if not 1 <= groups <= n_blocks:
        raise ValueError(f"groups={groups} must be in 1..{n_blocks} (the model's blocks)")
    sizes = [n_blocks // groups + (i < n_blocks % groups) for i in range(groups)]
    starts = [sum(sizes[:i]) for i in range(groups)]
    return [list(range(s, s + k)) for s, k in zip(starts, sizes)]


def share_run(run: list[nn.Module]) -> None:
    """Every block in ``run`` uses the first block's Parameters, set to the mean over the run (in place)."""
    names = [dict(b.named_parameters()) for b in run]
    if any({k: p.shape for k, p in n.items()} != {k: p.shape for k, p in names[0].items()} for n in names):
        raise ValueError("the blocks of a run differ in their parameters; only identical blocks can share")
    for key, shared in names[0].items():
        with torch.no_grad():
            shared.copy_(torch.stack([n[key].detach() for n in names]).mean(0))
        owner_path, _, attr = key.rpartition(".")
        for block in run[1:]:
            setattr(block.get_submodule(owner_path) if owner_path else block, attr, shared)


@register
class AlbertSharing(Technique):
    name = "albert_sharing"
    summary = "share one set of weights across runs of consecutive transformer blocks (mean of the trained ones)"
    Config = AlbertSharingConfig
    tasks = frozenset({"causal_lm", "encoder"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        if target.blocks is None:
            return Verdict("refused", "albert_sharing shares transformer blocks and this model has none "
                                      "(no num_hidden_layers)")
        if target.quantized:
            return Verdict("refused", "albert_sharing averages float block weights; an earlier step quantized them "
                                      "(share first, then quantize)")
        if config is not None and config.distinct(target.blocks) > target.blocks:
            return Verdict("refused", f"groups={config.groups} must be at most the model's {target.blocks} blocks",
                           blame="config")
        return Verdict("runs", CAVEAT)

    def apply(self, workload: Workload, config: AlbertSharingConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        _, _, lst = blocks(model)
        groups = runs(len(lst), config.distinct(len(lst)))
        for run in groups:
            share_run([lst[i] for i in run])
        before, after = parameter_count(workload.model), parameter_count(model)
        saved = stored_bytes(workload.model) - stored_bytes(model)
        notes = [f"{len(lst)} blocks → {len(groups)} distinct ({', '.join(str(tuple(r)) for r in groups)} share, each the "
                 f"mean of its run): parameters {before:,} → {after:,} ({after / before:.3f}×), {saved:,} bytes fewer stored",
                 CAVEAT + " (gradients from every use of a shared block add up)"]
        return StepRecord(workload.with_model(model), notes=notes,
                          diagnostics={"distinct_blocks": float(len(groups)), "blocks": float(len(lst))},
                          details={"runs": groups})
