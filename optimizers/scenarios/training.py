"""The training scenario: K optimizer steps of the run's recipe on the workload's training split,
the same seeded batches for the baseline (fp32, full fine-tune, torch AdamW, no checkpointing)
and every step. Measured: step time (median and p90 − p10 of the timed steps), tokens/s, peak
training memory split into parameters / gradients / optimizer states / activations (torch's own
accounting), trainable parameters, the loss curve, held-out loss before and after — and, so a
fine-tune also says what it produced, the trained model (adapters merged) measured like the
inference scenario measures quality (perplexity or accuracy, stored bytes). The estimator's
training memory for the same recipe stands beside the measured peak. Kept free of a top-level
torch import: playbooks validate a ``training:`` block with ``TrainingConfig``."""
from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainingConfig(BaseModel):
    """How long and on what a training run trains (a playbook's ``training:``); the defaults take
    a few minutes per recipe for smollm2-135m on 2 cores."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(12, ge=3, le=100_000, description="optimizer steps (K), warm-up and the profiled step included")
    warmup: int = Field(2, ge=1, le=1000, description="first steps not timed (first-use costs: an 8-bit optimizer "
                                                      "compiles its first step)")
    batch_size: int = Field(4, ge=1, le=4096, description="sequences (or images) per optimizer step")
    seq_len: int = Field(128, ge=8, le=32768, description="tokens per training sequence (LMs)")
    lr: float = Field(5e-5, gt=0, le=1.0, description="learning rate of a full fine-tune (adapters have their own)")
    eval_batches: int = Field(4, ge=1, le=1000, description="held-out batches for the eval loss")
    seed: int = Field(0, ge=0, description="seeds the batch order and any random init (LoRA's A)")

    @model_validator(mode="after")
    def _enough_steps(self) -> "TrainingConfig":
        check_config(self)
        return self


def check_config(cfg: TrainingConfig) -> None:
    if cfg.steps < cfg.warmup + 2:
        raise ValueError(f"training.steps={cfg.steps} must exceed warmup={cfg.warmup} by at least 2 (one profiled "
                         f"step, one timed); try steps={cfg.warmup + 10}")


def estimated_memory(workload: Any, recipe: Any, cfg: TrainingConfig) -> dict[str, float]:
    """``playbooks.estimate.training_memory`` for this recipe, model and batch, per rank: the
    formula's weights, gradients, optimizer states and activations. Empty for a model the
    estimator has no shape formula for (a CNN)."""
    conf = workload.meta.get("config")
    if not conf or workload.task != "causal_lm":
        return {}
    if recipe.adapter is None and any(type(m).__name__.startswith("QuantLinear") for m in workload.model.modules()):
        return {}  # a full fine-tune of a quantized model trains only its float remainder: no formula for that
    from playbooks.estimate import TrainingSetup, spec_from_config, training_memory

    a, sh = recipe.adapter, recipe.sharding
    setup = TrainingSetup(
        method="full" if a is None else ("qlora" if a.kind == "qlora" else "lora"),
        optimizer="adam8bit" if recipe.optimizer in ("adamw8bit", "adamw4bit") else "adam",
        mixed_precision=False, checkpointing=recipe.checkpointing == 1,
        zero_stage=sh.stage if sh else 0, gpus=sh.ranks if sh else 1,
        micro_batch=max(1, cfg.batch_size // recipe.accumulation // (sh.ranks if sh else 1)),
        seq_len=cfg.seq_len, lora_rank=a.rank if a else 16,
        lora_targets="attention" if a and set(a.targets) <= {"q_proj", "v_proj", "query", "value"} else "all",
        flash_attention=True, activation_value_bytes=2 if recipe.precision in ("bf16", "fp16") else 4)
    est = training_memory(spec_from_config(conf, workload.name), setup)
    return {"estimated_train_memory_bytes": float(est["peak"]),
            "estimated_train_activations_bytes": float(est["activations"])}


def _first_held_out(workload: Any, cfg: TrainingConfig) -> Any:
    from optimizers.training.data import eval_batches

    return eval_batches(workload, 1, min(cfg.batch_size, 2), cfg.seq_len)[0]


def _outputs(model: Any, batch: Any) -> Any:
    import torch

    from optimizers.training.loop import to_device

    was = model.training
    model.eval()
    with torch.no_grad():
        device = next(iter(model.parameters())).device
        b = to_device(batch, str(device))
        if isinstance(b, dict):  # a sentence encoder: the first side's hidden states
            out = model(input_ids=b["a_input_ids"], attention_mask=b["a_attention_mask"]).last_hidden_state
        else:
            out = model(input_ids=b).logits if torch.is_tensor(b) else model(b[0])
    model.train(was)
    return out.float()


def measure_training(workload: Any, reference: Any = None, *, runtime: dict[str, Any] | None = None,
                     training: TrainingConfig | None = None,
                     progress: Callable[[int, int, float], None] | None = None) -> Any:
    """Train a copy of ``workload``'s model under the recipe in ``runtime``; the figures above."""
    from optimizers import measure as H
    from optimizers.training.adapters import merge
    from optimizers.training.recipe import Recipe

    cfg = training or TrainingConfig()
    recipe = Recipe.of(runtime)
    if recipe.sharding is not None:
        from optimizers.training.distributed import train_sharded

        result = train_sharded(workload, recipe, cfg, on_step=progress)
    else:
        from optimizers.training.loop import train

        result = train(workload, recipe, cfg, on_step=progress)
    step_ms, spread = H.median_and_spread(result.step_ms)
    m = result.memory
    values: dict[str, float] = {
        "train_step_ms": step_ms, "train_step_spread_ms": spread,
        "train_tokens_per_s": result.tokens_per_step / (step_ms / 1e3),
        "train_peak_memory_bytes": float(m["peak"]), "train_memory_params_bytes": float(m["params"]),
        "train_memory_grads_bytes": float(m["grads"]), "train_memory_optimizer_bytes": float(m["optimizer"]),
        "train_memory_activations_bytes": float(m["activations"]),
        "train_memory_model_state_bytes": float(m["params"] + m["grads"] + m["optimizer"]),
        "train_loss": result.losses[-1], "train_loss_first": result.losses[0],
        "eval_loss": result.eval_loss, "eval_loss_before": result.eval_loss_before,
        "trainable_params": float(result.trainable), "trainable_fraction": result.trainable / max(result.total, 1),
        "train_steps": float(len(result.losses)), "train_ranks": float(recipe.sharding.ranks if recipe.sharding else 1),
    }
    est = estimated_memory(workload, recipe, cfg)
    values |= est
    if est:
        values["estimate_error"] = est["estimated_train_memory_bytes"] / values["train_peak_memory_bytes"] - 1.0
    else:
        result.notes.append("no estimate: the estimator's formula covers transformer LMs trained in full or with "
                            "adapters, not a CNN or a full fine-tune of a quantized model")
    probe = _first_held_out(workload, cfg)
    before = _outputs(result.model, probe)
    trained = workload.with_model(merge(result.model).eval())
    if recipe.adapter is not None:  # what merging cost: exact for LoRA, NF4 re-quantization's rounding for QLoRA
        after = _outputs(trained.model, probe)
        values["merge_output_rel_error"] = float((after - before).norm() / before.norm().clamp(min=1e-30))
    values["stored_bytes"] = float(H.stored_bytes(trained.model))
    values |= H.sixteen_bit_reference(values["stored_bytes"], workload.meta.get("param_count")
                                      or H.parameter_count(workload.model))
    values |= H.quality(trained)  # an encoder's labelled pairs: does fine-tuning keep the general similarity?
    notes = [f"recipe: {recipe.describe()}; {cfg.steps} steps of {cfg.batch_size} × "
             + (f"{cfg.seq_len} tokens" if workload.task == "causal_lm" else "images")
             + f", {cfg.warmup} warm-up + 1 profiled step untimed", *result.notes]
    return H.Measurement(metrics=values, environment=H.environment(workload.device), notes=notes,
                         details={"loss_curve": [round(x, 6) for x in result.losses]})
