"""The base of the compression techniques that train (distillation, recovery fine-tuning, sparse
training): a transform step whose ``apply`` runs the training loop for a short, stated budget on
the workload's training split and returns the trained model, which the run's scenario then
measures like any other step's. The step's own training cost (step time, tokens/s, peak memory,
loss curve, held-out loss before and after) is measured by the same loop the training scenario
times and stored with the step. Progress and cancellation reach the loop through ``progress``."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict

ProgressFn = Callable[[int, int, float], None]
_progress: contextvars.ContextVar[ProgressFn | None] = contextvars.ContextVar("train_progress", default=None)

LR = {"causal_lm": 1e-4, "encoder": 2e-5, "vision": 1e-3}  # a short recovery budget's learning rate per task


@contextlib.contextmanager
def progress(fn: ProgressFn | None) -> Iterator[None]:
    """Within this block a training transform reports ``fn(step, steps, loss)`` after each step
    (the pipeline's: the Run page's progress and the cancel check)."""
    token = _progress.set(fn)
    try:
        yield
    finally:
        _progress.reset(token)


class TrainBudget(TechniqueConfig):
    """How long a training transform trains: the defaults take about a minute on ref-lm or
    digits-cnn on 2 cores; smollm2-135m is ~4 s per step of 4 × 128 tokens here."""

    steps: int = Field(60, ge=3, le=100_000, description="optimizer steps")
    batch_size: int = Field(8, ge=1, le=4096, description="sequences (or images) per step")
    seq_len: int = Field(128, ge=8, le=32768, description="tokens per training sequence (LMs)")
    lr: float | None = Field(None, gt=0, le=1.0, description="learning rate (default: 1e-4 for LMs, 2e-5 for "
                                                             "encoders, 1e-3 for vision)")
    seed: int = Field(0, ge=0, description="seeds the batch order")


def fit(workload: Any, budget: TrainBudget, start: Any = None, hooks: tuple = ()) -> tuple[Any, dict[str, float], dict]:
    """Train ``start`` (default: the workload's model) for the budget under ``hooks``; returns the
    trained model (eval mode), its training figures and its loss curve (details)."""
    from optimizers import measure as H
    from optimizers.scenarios.training import TrainingConfig
    from optimizers.training.loop import train
    from optimizers.training.recipe import Recipe

    cfg = TrainingConfig(steps=budget.steps, warmup=1, batch_size=budget.batch_size, seq_len=budget.seq_len,
                         lr=budget.lr or LR[workload.task], eval_batches=4, seed=budget.seed)
    result = train(workload, Recipe(), cfg, on_step=_progress.get(), start=start, hooks=hooks)
    step_ms, spread = H.median_and_spread(result.step_ms)
    figures = {"train_steps": float(budget.steps), "train_step_ms": step_ms, "train_step_spread_ms": spread,
               "train_tokens_per_s": result.tokens_per_step / (step_ms / 1e3),
               "train_peak_memory_bytes": float(result.memory["peak"]),
               "train_loss_first": result.losses[0], "train_loss": result.losses[-1],
               "eval_loss_before": result.eval_loss_before, "eval_loss": result.eval_loss,
               "train_tokens": float(result.tokens_per_step * budget.steps)}
    return result.model.eval(), figures, {"loss_curve": [round(x, 6) for x in result.losses]}


def describe(budget: TrainBudget, task: str) -> str:
    unit = f"{budget.seq_len} tokens" if task == "causal_lm" else ("pairs" if task == "encoder" else "images")
    return (f"{budget.steps} steps of {budget.batch_size} × {unit} on the training split, "
            f"AdamW lr {budget.lr or LR[task]:g}")


class TrainingTransform(Technique):
    """A compression technique that trains: a transform (a new model, measured by the scenario)
    that needs the workload's training split; its apply calls ``fit``."""

    kind = "transform"

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and not target.has_train:
            return Verdict("refused", f"{self.name} trains, and this workload has no training split; use ref-lm, "
                                      "ref-lm-draft, smollm2-135m, tiny-llama, minilm or digits-cnn")
        return verdict


def control_run(workload: Any, budget: TrainBudget, what: str, notes: list[str], diagnostics: dict[str, float],
                details: dict, start: Any = None, hooks: tuple = (), then: Callable[[Any], Any] = lambda m: m) -> dict[str, float]:
    """The comparison a step needs: the same budget without the technique (``then`` turns the
    trained control into what is compared, e.g. the same blocks removed). Its quality goes in
    ``diagnostics`` as control_*, its curve in ``details``; returns its training figures."""
    from optimizers import measure as H

    model, figures, ctl_details = fit(workload, budget, start=start, hooks=hooks)
    diagnostics |= {f"control_{k}": v for k, v in H.quality(workload.with_model(then(model))).items()}
    details["control_loss_curve"] = ctl_details["loss_curve"]
    notes.append(f"control: {what} (control_*)")
    return figures


def record(workload: Any, model: Any, budget: TrainBudget, figures: dict[str, float], details: dict,
           notes: list[str], diagnostics: dict[str, float] | None = None, **meta: Any) -> StepRecord:
    """The step's record: the trained model, its training cost and curve, what was done."""
    return StepRecord(workload.with_model(model, **meta), notes=[f"trained {describe(budget, workload.task)}", *notes],
                      diagnostics={**figures, **(diagnostics or {})}, details=details)


class SparseStorage(TechniqueConfig):
    """How a trained sparse model is stored; a step without these fields stores by the defaults."""

    include_lm_head: bool = Field(False, description="also prune the output projection (lm_head); usually costs quality")
    store_sparse: bool = Field(True, description="store layers whose sparsity reaches csr_min_sparsity as CSR")
    csr_min_sparsity: float = Field(0.8, ge=0.5, le=1.0, description="CSR storage threshold (below ~0.8 CSR is "
                                                                      "slower than dense on CPU, FACTS.md)")


class SparseBudget(TrainBudget, SparseStorage):
    """A sparse-training technique's budget and target."""

    sparsity: float = Field(0.5, gt=0.0, lt=1.0, description="final fraction of prunable Linear weights that are zero")
    distill: bool = Field(False, description="also learn the starting (dense) model's softened logits while "
                                             "sparsifying (Sanh et al. 2020 distil their pruned BERTs too)")
    temperature: float = Field(2.0, gt=0, le=100, description="distillation temperature (distill=true)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's soft targets (distill=true)")


def teacher_hooks(workload: Any, config: Any) -> tuple:
    """The distillation hook a sparse-training step adds when ``distill``: the dense model it starts
    from, frozen, as the teacher (it comes before the sparsity hook: its loss is the step's)."""
    if not (isinstance(config, SparseBudget) and config.distill):
        return ()
    from optimizers.training.distill import Distiller

    return (Distiller(workload.model, config.temperature, config.alpha),)


def sparse_start(model: Any) -> tuple[Any, list[str]]:
    """A trainable copy of ``model``: CSR-stored layers dense again (their names kept)."""
    import copy

    from optimizers.training.sparse import densify

    model = copy.deepcopy(model)
    return model, densify(model)


def sparse_result(model: Any, config: Any, csr_before: list[str]) -> tuple[list[str], dict[str, float]]:
    """The trained sparse model stored as the config says (layers CSR before stay CSR); its notes
    and the measured sparsity."""
    from optimizers import sparsity as S
    from optimizers.training.sparse import prunable

    storage = config if isinstance(config, SparseStorage) else SparseStorage()
    distilled = isinstance(config, SparseBudget) and config.distill
    layers = prunable(model, storage.include_lm_head)
    achieved = S.layers_sparsity(layers)
    swapped = S.to_csr(model, layers, storage.csr_min_sparsity) if storage.store_sparse else []
    again = [(n, m) for n, m in prunable(model, True) if n in csr_before]
    swapped += S.to_csr(model, again, 0.0)
    notes = [f"{achieved:.1%} of {len(layers)} prunable Linear layers' weights are zero (measured after training)"
             + (f"; distilled from the dense starting model (T = {config.temperature:g}, α = {config.alpha:g})"
                if distilled else ""),
             S.storage_note(swapped, len(layers), storage.csr_min_sparsity, achieved)]
    return notes, {"sparsity": achieved}
