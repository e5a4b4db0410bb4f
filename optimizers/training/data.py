"""The training scenario's data: a fixed, seeded order of batches, the same for the baseline and
every step (so a loss curve or a step time compares like with like), and held-out batches for
the eval loss at the end. LMs: windows of ``seq_len`` tokens from the workload's train stream at
seeded offsets; vision: a seeded permutation of the train images."""
from __future__ import annotations

from typing import Any

import torch

from optimizers.workloads.base import LMTrain, PairTrain, VisionTrain, Workload


def _split(workload: Workload) -> LMTrain | VisionTrain:
    if workload.train is None:
        raise ValueError(f"workload {workload.name!r} has no training split, so the training scenario cannot run "
                         "on it; use ref-lm, ref-lm-draft, smollm2-135m, tiny-llama, minilm or digits-cnn")
    return workload.train()


def train_batches(workload: Workload, steps: int, batch_size: int, seq_len: int, seed: int,
                  selection: Any = None, scorer: Any = None) -> list[Any]:
    """``steps`` batches in a fixed order: (batch_size, seq_len) token ids, or (images, labels).
    With a ``selection`` (``optimizers.training.selection``) the examples are chosen and ordered by
    ``scorer``'s difficulty scores instead (data pruning, curriculum)."""
    split = _split(workload)
    g = torch.Generator().manual_seed(seed)
    if selection is not None and isinstance(split, PairTrain):
        raise ValueError("data selection scores LM windows and labelled images; a sentence-pair split has no "
                         "per-example labels to score against")
    if isinstance(split, PairTrain):
        n = len(split.pairs)
        if n < batch_size:
            raise ValueError(f"batch_size={batch_size} exceeds the {n} training pairs of {workload.name!r}")
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-steps * batch_size // n))])
        rows = order[: steps * batch_size].reshape(steps, batch_size).tolist()
        return [pair_batch(split, [split.pairs[i] for i in row]) for row in rows]
    if isinstance(split, VisionTrain):
        n, needed = split.labels.numel(), steps * batch_size
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-needed // n))])[:needed]
        if selection is not None:
            from optimizers.training.selection import scores

            s = scores(scorer, [(split.images[i], split.labels[i]) for i in range(n)], "vision", selection.score,
                       workload.device)
            if selection.kind == "curriculum":  # the baseline's own images, easiest first
                order = order[s[order].argsort(stable=True)]
            else:  # the hardest fraction of the training set, in epochs of its own shuffles
                kept = s.argsort(descending=True)[: max(1, round(selection.keep * n))]
                order = torch.cat([kept[torch.randperm(len(kept), generator=g)]
                                   for _ in range(-(-needed // len(kept)))])[:needed]
        idx = order.reshape(steps, batch_size)
        return [(split.images[i], split.labels[i]) for i in idx]
    ids = split.token_ids
    if ids.numel() < seq_len + 1:
        raise ValueError(f"seq_len={seq_len} exceeds the {ids.numel()}-token train split of {workload.name!r}")
    needed = steps * batch_size
    if selection is None:
        starts = torch.randint(0, ids.numel() - seq_len, (steps, batch_size), generator=g)
        return [torch.stack([ids[s : s + seq_len] for s in row.tolist()]) for row in starts]
    from optimizers.training.selection import pool_size, scores, select

    starts = torch.randint(0, ids.numel() - seq_len, (pool_size(needed, selection),), generator=g)
    windows = [ids[s : s + seq_len] for s in starts.tolist()]
    chosen = select(windows, scores(scorer, windows, "causal_lm", selection.score, workload.device), needed,
                    selection, g)
    return [torch.stack(chosen[k * batch_size : (k + 1) * batch_size]) for k in range(steps)]


def eval_batches(workload: Workload, n_batches: int, batch_size: int, seq_len: int) -> list[Any]:
    """Held-out batches (never trained on): disjoint windows of the held-out stream, or the test images."""
    split = _split(workload)
    if isinstance(split, PairTrain):
        held = split.held_out[: n_batches * batch_size]
        return [pair_batch(split, held[i : i + batch_size]) for i in range(0, len(held), batch_size)]
    if isinstance(split, VisionTrain):
        ev = workload.eval
        return [(x, y) for x, y in zip(ev.images.split(batch_size), ev.labels.split(batch_size))][:n_batches]
    ids = split.eval_ids if split.eval_ids is not None else workload.eval.token_ids
    windows = ids[: (ids.numel() // seq_len) * seq_len].reshape(-1, seq_len)[: n_batches * batch_size]
    if not len(windows):
        raise ValueError(f"seq_len={seq_len} exceeds the held-out stream of {workload.name!r}")
    return list(windows.split(batch_size))


def pair_batch(split: PairTrain, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Both sides of ``pairs`` tokenized: ``a_*`` and ``b_*`` input ids and attention masks (B, T)."""
    enc = lambda texts: split.tokenizer(texts, padding=True, truncation=True, max_length=split.max_length,  # noqa: E731
                                        return_tensors="pt")
    a, b = enc([p[0] for p in pairs]), enc([p[1] for p in pairs])
    return {"a_input_ids": a["input_ids"], "a_attention_mask": a["attention_mask"],
            "b_input_ids": b["input_ids"], "b_attention_mask": b["attention_mask"]}


def _rows(batch: Any) -> int:
    if isinstance(batch, dict):
        return batch["a_input_ids"].shape[0]
    return batch.shape[0] if torch.is_tensor(batch) else batch[1].shape[0]


def batch_tokens(batch: Any) -> int:
    """Tokens (LM), pairs (encoder) or samples (vision) a batch trains on."""
    if isinstance(batch, dict):
        return int(batch["a_input_ids"].shape[0])
    return int(batch.numel()) if torch.is_tensor(batch) else int(batch[1].numel())


def split_micro(batch: Any, parts: int) -> list[Any]:
    """A step's batch as ``parts`` equal micro-batches (gradient accumulation)."""
    n = _rows(batch)
    if n % parts:
        raise ValueError(f"accumulation={parts} must divide the batch of {n} sequences; pick a divisor of batch_size")
    if isinstance(batch, dict):  # in-batch negatives: each micro-batch's pairs are each other's negatives
        chunks = {k: v.chunk(parts) for k, v in batch.items()}
        return [{k: c[i] for k, c in chunks.items()} for i in range(parts)]
    if torch.is_tensor(batch):
        return list(batch.chunk(parts))
    return list(zip(batch[0].chunk(parts), batch[1].chunk(parts)))


def shard(batch: Any, rank: int, world: int) -> Any:
    """Rank ``rank``'s equal slice of a batch (data parallel)."""
    return split_micro(batch, world)[rank]
