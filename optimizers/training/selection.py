"""Data-level efficiency for the training scenario: which examples a run trains on and in what
order, from per-example difficulty scores. Scores are EL2N (Paul, Ganguli & Dziugaite, Deep
Learning on a Data Diet, NeurIPS 2021: ‖softmax(f(x)) − onehot(y)‖₂, per token for an LM,
averaged over the window) or the example's loss, computed by the starting model (after an
optional short warm-up on the full data). ``prune`` keeps the highest-scoring fraction ``keep``
of the candidates — for an LM a pool 1/keep times as large as the budget needs, so the kept
windows fill the same steps, each seen once like the baseline's; for images the training set —
and ``curriculum`` (Bengio et al. 2009) trains on the baseline's own examples, easiest first."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from optimizers.training.recipe import DataSelection


@torch.no_grad()
def scores(model: torch.nn.Module, examples: list[Any], task: str, how: str, device: str,
           batch_size: int = 16) -> torch.Tensor:
    """One difficulty score per example (higher: harder). LM examples are (T,) token windows;
    vision examples are (image, label) pairs."""
    if task not in ("causal_lm", "vision"):
        raise ValueError(f"data selection scores causal-LM windows and labelled images, not {task} examples")
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        if task == "causal_lm":
            x = torch.stack(chunk).to(device)
            logits, y = model(input_ids=x, use_cache=False).logits[:, :-1].float(), x[:, 1:]
        else:
            logits = model(torch.stack([c[0] for c in chunk]).to(device)).float()
            y = torch.stack([c[1] for c in chunk]).to(device)
        if how == "loss":
            s = F.cross_entropy(logits.transpose(1, 2) if logits.dim() == 3 else logits, y, reduction="none")
        elif how == "el2n":
            s = (logits.softmax(-1) - F.one_hot(y, logits.shape[-1]).float()).norm(dim=-1)
        else:
            raise ValueError(f"score={how!r}; use el2n or loss")
        out.append(s.mean(-1) if s.dim() == 2 else s)
    model.train(was)
    return torch.cat(out).cpu()


def pool_size(needed: int, selection: DataSelection) -> int:
    """Candidates to score so that ``needed`` examples remain after keeping ``keep`` of them."""
    if not 0.0 < selection.keep <= 1.0:
        raise ValueError(f"keep={selection.keep} must be in (0, 1]")
    return needed if selection.kind == "curriculum" else math.ceil(needed / selection.keep)


def select(examples: list[Any], s: torch.Tensor, needed: int, selection: DataSelection,
           generator: torch.Generator) -> list[Any]:
    """``needed`` examples in training order: the hardest ``keep`` fraction shuffled (prune), or
    the examples sorted easy → hard (curriculum)."""
    if len(examples) != len(s):
        raise ValueError(f"{len(examples)} examples but {len(s)} scores")
    if selection.kind == "curriculum":
        return [examples[i] for i in s.argsort().tolist()][:needed]
    kept = s.argsort(descending=True)[: max(needed, round(selection.keep * len(examples)))]
    order = kept[torch.randperm(len(kept), generator=generator)][:needed]
    return [examples[i] for i in order.tolist()]
