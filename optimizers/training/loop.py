"""The single-process training loop the training scenario times: K optimizer steps of a recipe
on a fixed batch order. Steps before ``warmup`` are not timed (first-use costs: torchao's 8-bit
optimizer compiles its first step); the first step after them is profiled for memory by kind and
not timed either (the profiler slows it); the rest are timed. Every step's loss is kept."""
from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from optimizers.training import memory as mem
from optimizers.training.data import batch_tokens, eval_batches, split_micro, train_batches
from optimizers.training.recipe import Recipe

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


PAIR_SCALE = 20.0  # cosine similarities × 20 as logits (sentence-transformers' MultipleNegativesRankingLoss)


def task_loss(model: nn.Module, batch: Any, task: str) -> torch.Tensor:
    """Next-token cross-entropy for a causal LM (labels = inputs; the model shifts them), cross-
    entropy on (images, labels) for a classifier, and for a sentence encoder the in-batch
    contrastive loss on (text, match) pairs: each text's match against every other pair's
    (InfoNCE, van den Oord et al. 2018; Henderson et al. 2017's multiple-negatives ranking)."""
    if task == "causal_lm":
        return model(input_ids=batch, labels=batch, use_cache=False).loss
    logits, targets = task_logits(model, batch, task)
    return F.cross_entropy(logits.float(), targets)


def task_logits(model: nn.Module, batch: Any, task: str, hidden: bool = False) -> tuple[torch.Tensor, ...]:
    """The task's logits and its class targets, flattened to (N, classes) and (N,): each next-token
    prediction of a causal LM, each image's classes, each encoder text's in-batch similarities
    (× ``PAIR_SCALE``) to every match. What cross-entropy and a distillation loss both read; with
    ``hidden`` the hidden states (a tuple, embeddings first) come third (transformers models)."""
    if task == "causal_lm":
        out = model(input_ids=batch, use_cache=False, output_hidden_states=hidden)
        logits = out.logits[:, :-1]
        res = (logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        return (*res, out.hidden_states) if hidden else res
    if task == "encoder":
        from optimizers.workloads.minilm import mean_pool

        states = []

        def embed(side: str) -> torch.Tensor:
            ids, mask = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"]
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
            if hidden and side == "a":
                states.extend(out.hidden_states)
            return F.normalize(mean_pool(out.last_hidden_state, mask), dim=-1)

        a, b = embed("a"), embed("b")
        res = (PAIR_SCALE * a @ b.T, torch.arange(len(a), device=a.device))
        return (*res, tuple(states)) if hidden else res
    if task == "vision":
        if hidden:
            raise ValueError("hidden-state matching needs a transformers model; a vision classifier gives logits only")
        images, labels = batch
        return model(images), labels
    raise ValueError(f"the training scenario trains causal LMs, sentence encoders and image classifiers, not {task}")


class TrainHook:
    """What a training transform adds to the loop (distillation, sparse training): its own loss,
    extra trainable parameters (a feature projection), and calls around every optimizer step.
    The defaults do nothing, so the loop without hooks is the training scenario's."""

    def parameters(self) -> list[nn.Parameter]:
        return []

    def loss(self, model: nn.Module, batch: Any, task: str) -> torch.Tensor | None:
        return None  # None: the task's own loss

    def on_start(self, model: nn.Module) -> None:
        pass

    def before_step(self, model: nn.Module, k: int) -> None:
        """After the step's backward, before the optimizer reads the gradients."""

    def after_step(self, model: nn.Module, k: int) -> None:
        """After the optimizer step (``k`` counts from 0)."""


def to_device(batch: Any, device: str) -> Any:
    if isinstance(batch, dict):
        return {k: v.to(device) for k, v in batch.items()}
    return batch.to(device) if torch.is_tensor(batch) else tuple(t.to(device) for t in batch)


def make_optimizer(name: str, params: list[nn.Parameter], lr: float, device: str) -> torch.optim.Optimizer:
    """torch AdamW, or AdamW with 8-bit / 4-bit block-quantized moments (Dettmers et al. 2022,
    arXiv:2110.02861; Li et al. 2023 for 4-bit): bitsandbytes on CUDA when installed, torchao's
    on the CPU (and on CUDA without bitsandbytes)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if device.startswith("cuda") and name == "adamw8bit":
        try:
            import bitsandbytes as bnb  # optional: GPU images

            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=0.0)
        except ImportError:
            pass
    from torchao.optim import AdamW4bit, AdamW8bit

    cls = {"adamw8bit": AdamW8bit, "adamw4bit": AdamW4bit}[name]
    return cls(params, lr=lr, weight_decay=0.0)


def prepare(model: nn.Module, recipe: Recipe, task: str, notes: list[str] | None = None) -> nn.Module:
    """A trainable copy of ``model`` under the recipe: adapters attached (only they train), or every
    float parameter trainable; activation checkpointing on the transformer blocks."""
    from optimizers.training.adapters import attach

    notes = notes if notes is not None else []
    model = copy.deepcopy(model)
    if recipe.adapter is not None:
        if task == "vision":
            raise ValueError(f"{recipe.adapter.kind} adapts a transformer's projections, not a {task} model")
        for p in model.parameters():
            p.requires_grad_(False)
        model = attach(model, recipe.adapter)
    else:
        for p in model.parameters():
            p.requires_grad_(p.is_floating_point())
        if any(type(m).__name__.startswith("QuantLinear") for m in model.modules()):
            notes.append("the model holds quantized layers (frozen packed buffers): a full fine-tune trains only its "
                         "float parameters (embeddings, norms); add lora or qlora to train its projections")
    if recipe.checkpointing:
        if not hasattr(model, "activation_checkpointing_enable"):
            raise ValueError("activation checkpointing here checkpoints a transformers model's decoder layers; "
                             f"{type(model).__name__} has none")
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              every_n_layers=int(recipe.checkpointing))
    if getattr(getattr(model, "config", None), "use_cache", None):
        model.config.use_cache = False
    return model.train()


@dataclass
class TrainResult:
    model: nn.Module  # the trained model, adapters still attached (``adapters.merge`` folds them)
    losses: list[float]  # every optimizer step's loss (mean over its sequences)
    step_ms: list[float]  # the timed steps' wall times
    tokens_per_step: int  # tokens (or samples) one optimizer step trains on
    memory: dict[str, int]  # params, grads, optimizer, activations, peak bytes (one rank's, when sharded)
    trainable: int
    total: int
    eval_loss: float
    eval_loss_before: float
    notes: list[str] = field(default_factory=list)


@torch.no_grad()
def eval_loss(model: nn.Module, batches: list[Any], task: str, device: str) -> float:
    """Mean held-out loss, fp32, dropout off (the recipe's precision is for training steps)."""
    was = model.training
    model.eval()
    losses = [float(task_loss(model, to_device(b, device), task)) for b in batches]
    model.train(was)
    return sum(losses) / len(losses)


def train(workload, recipe: Recipe, cfg, on_step: Callable[[int, int, float], None] | None = None,
          rank: int = 0, world: int = 1, wrap: Callable[[nn.Module], nn.Module] | None = None,
          make_opt: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
          start: nn.Module | None = None, hooks: tuple[TrainHook, ...] = ()) -> TrainResult:
    """K steps of ``recipe`` on ``workload``'s fixed batch order. ``rank``/``world``, ``wrap`` and
    ``make_opt`` are the data-parallel hooks ``distributed.py`` uses (each rank its slice of every
    batch; the sharded model and optimizer); alone, one process trains on whole batches. ``start``
    trains another model than the workload's (a distillation student, on the same data); ``hooks``
    add a loss, parameters and per-step work (``TrainHook``). The held-out loss is the task's."""
    from optimizers.scenarios.training import check_config

    check_config(cfg)
    device, task = workload.device, workload.task
    torch.manual_seed(cfg.seed)
    batches = train_batches(workload, cfg.steps, cfg.batch_size, cfg.seq_len, cfg.seed,
                            selection=recipe.data, scorer=_scorer(workload, recipe, cfg))
    held_out = eval_batches(workload, cfg.eval_batches, cfg.batch_size, cfg.seq_len)
    notes: list[str] = []
    model = prepare(workload.model if start is None else start, recipe, task, notes)
    before = eval_loss(model, held_out, task, device)
    if wrap is not None:
        model = wrap(model)
    for h in hooks:
        h.on_start(model)
    params = [p for p in model.parameters() if p.requires_grad] + [p for h in hooks for p in h.parameters()]
    if not params:
        raise ValueError("nothing to train: the model has no trainable parameters under this recipe")
    lr = recipe.adapter.lr if recipe.adapter is not None else cfg.lr
    opt = make_opt(params) if make_opt is not None else make_optimizer(recipe.optimizer, params, lr, device)
    scaler = torch.amp.GradScaler(device.split(":")[0]) if recipe.precision == "fp16" else None
    autocast = (lambda: torch.autocast(device.split(":")[0], dtype=DTYPES[recipe.precision])) \
        if recipe.precision in DTYPES else nullcontext
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    probe_at = cfg.warmup
    losses, step_ms, memory = [], [], {}
    for k, batch in enumerate(batches):
        if world > 1:
            from optimizers.training.data import shard

            batch = shard(batch, rank, world)
        batch = to_device(batch, device)
        opt.zero_grad(set_to_none=True)  # outside the probe: live bytes at its start are params + states
        states_before = mem.optimizer_bytes(opt) if k == probe_at else 0
        probe = mem.MemoryProbe(device) if k == probe_at else None
        sync()
        t0 = time.perf_counter()
        with probe or nullcontext():
            total = 0.0
            for micro in split_micro(batch, recipe.accumulation):
                with (probe.forward() if probe else nullcontext()), autocast():
                    loss = _loss(model, micro, task, hooks) / recipe.accumulation
                (scaler.scale(loss) if scaler else loss).backward()
                total += float(loss.detach())
            if probe:
                memory["grads"] = mem.grad_bytes(model)
            for h in hooks:
                h.before_step(model, k)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            for h in hooks:
                h.after_step(model, k)
        sync()
        dt = (time.perf_counter() - t0) * 1e3
        if probe:
            memory |= {"params": mem.param_bytes(model), "optimizer": mem.optimizer_bytes(opt),
                       "activations": probe.activation_bytes}
            memory["peak"] = memory["params"] + states_before + probe.peak_bytes
        elif k > probe_at:
            step_ms.append(dt)
        if world > 1:
            total = _mean_over_ranks(total)
        if not math.isfinite(total):
            raise ValueError(f"the loss became {total} at step {k + 1}: lower lr (now {lr:g}) or use bf16 instead of fp16")
        losses.append(total)
        if on_step is not None:
            on_step(k + 1, len(batches), total)
    trainable, _ = mem.trainable_params(model)
    count = workload.meta.get("param_count") or mem.trainable_params(workload.model)[1]  # the untouched model's
    after = eval_loss(model, held_out, task, device)
    return TrainResult(model, losses, step_ms, batch_tokens(batches[0]), memory, trainable, count,
                       eval_loss=_mean_over_ranks(after) if world > 1 else after, eval_loss_before=before,
                       notes=notes)


def _scorer(workload, recipe: Recipe, cfg) -> nn.Module | None:
    """The model that scores examples for a data selection: the starting model, or a copy trained
    for the selection's warm-up steps on the full data (the same seed, the plain recipe)."""
    if recipe.data is None:
        return None
    if not recipe.data.warmup_steps:
        return workload.model
    if recipe.data.warmup_steps < 3:
        raise ValueError(f"warmup_steps={recipe.data.warmup_steps}: use 0 (score with the starting model) or ≥ 3")
    warm = cfg.model_copy(update={"steps": recipe.data.warmup_steps, "warmup": 1})
    return train(workload, Recipe(), warm).model.eval()


def _loss(model: nn.Module, batch: Any, task: str, hooks: tuple[TrainHook, ...]) -> torch.Tensor:
    for h in hooks:
        loss = h.loss(model, batch, task)
        if loss is not None:
            return loss
    return task_loss(model, batch, task)


def _mean_over_ranks(x: float) -> float:
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()
