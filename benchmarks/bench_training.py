"""Issue 13's goal table for the training scenario, generated: every recipe trains a copy of the
same starting model on the same seeded batches through ``optimizers.scenarios.training`` — the
code ``speedbook run`` measures a training playbook with — against the fp32 full fine-tune with
torch AdamW measured in the same run. smollm2-135m for the goals; ref-lm for the 16-bit autocast
rows (bf16 is slow on a CPU without AMX / AVX-512-BF16: measured there at a tenth of the cost);
the estimator against the measured peak on every built-in LM workload. Writes
``benchmarks/TRAINING.md``.

``python -m benchmarks bench_training`` (part of ``make bench``; ~30 min on 2 cores)."""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, Callable

OUT = Path(__file__).resolve().parent / "TRAINING.md"
WORKLOAD = "smollm2-135m"
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# (label, recipe fields): the first row of each workload is its baseline
ROWS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    WORKLOAD: [
        ("baseline: fp32 full fine-tune, torch AdamW", {}),
        ("activation checkpointing", {"checkpointing": 1}),
        ("gradient accumulation (4 micro-batches)", {"accumulation": 4}),
        ("8-bit AdamW (torchao)", {"optimizer": "adamw8bit"}),
        ("4-bit AdamW (torchao)", {"optimizer": "adamw4bit"}),
        ("LoRA r=8 on q, v (peft)", {"adapter": {"kind": "lora"}}),
        ("DoRA r=8 on q, v (peft)", {"adapter": {"kind": "dora"}}),
        ("QLoRA: NF4 base + LoRA r=8 on every projection", {"adapter": {"kind": "qlora", "targets": ALL}}),
        ("FSDP2 / ZeRO-3 over 2 ranks (gloo)", {"sharding": {"stage": 3, "ranks": 2}}),
        ("ZeRO-1 over 2 ranks (ZeroRedundancyOptimizer)", {"sharding": {"stage": 1, "ranks": 2}}),
    ],
    "ref-lm": [
        ("baseline: fp32 full fine-tune, torch AdamW", {}),
        ("bf16 autocast", {"precision": "bf16"}),
        ("fp16 autocast + GradScaler", {"precision": "fp16"}),
        ("activation checkpointing", {"checkpointing": 1}),
        ("LoRA r=8 on q, v (peft)", {"adapter": {"kind": "lora"}}),
    ],
    "ref-lm-draft": [("baseline: fp32 full fine-tune, torch AdamW", {})],
    "tiny-llama": [("baseline: fp32 full fine-tune, torch AdamW", {})],
}


def measure_all(log: Callable[[str], None] = print) -> dict[str, Any]:
    from optimizers.measure import environment
    from optimizers.scenarios.training import TrainingConfig, measure_training
    from optimizers.workloads import load_workload

    cfg = TrainingConfig()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, rows in ROWS.items():
        wl = load_workload(name)
        results[name] = {}
        for label, recipe in rows:
            t0 = time.perf_counter()
            m = measure_training(wl, runtime={"training": recipe}, training=cfg)
            results[name][label] = {**m.metrics, "loss_curve": m.details["loss_curve"],
                                    "wall_s": time.perf_counter() - t0}
            log(f"{name} / {label}: {time.perf_counter() - t0:.0f} s, step {m.metrics['train_step_ms']:.0f} ms, "
                f"peak {m.metrics['train_peak_memory_bytes'] / 2**20:.0f} MiB")
    return {"results": results, "env": environment("cpu"), "cfg": cfg.model_dump(),
            "qlora_base": qlora_base_weights(load_workload(WORKLOAD))}


def qlora_base_weights(wl) -> dict[str, float]:
    """The bytes of the base weights QLoRA quantizes — every projection of every decoder layer —
    as NF4 layers (measured: the packed codes and double-quantized absmax of real QuantLinearNF4
    modules) against the same weights in fp32 and in 16 bits."""
    from torch import nn

    from optimizers.measure import stored_bytes
    from optimizers.quant.nf4 import QuantLinearNF4

    linears = [m for n, m in wl.model.named_modules() if type(m) is nn.Linear and n.rsplit(".", 1)[-1] in ALL]
    nf4 = sum(stored_bytes(QuantLinearNF4.from_linear(m)) for m in linears)
    elems = sum(m.weight.numel() for m in linears)
    return {"nf4_bytes": nf4, "fp32_bytes": 4 * elems, "bf16_bytes": 2 * elems, "layers": len(linears)}


def _curve_rel_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def goals(r: dict[str, dict[str, dict[str, Any]]], base_weights: dict[str, float]) -> list[tuple[str, str, bool | None]]:
    s = r[WORKLOAD]
    base = s["baseline: fp32 full fine-tune, torch AdamW"]
    ck, a8 = s["activation checkpointing"], s["8-bit AdamW (torchao)"]
    lora, q = s["LoRA r=8 on q, v (peft)"], s["QLoRA: NF4 base + LoRA r=8 on every projection"]
    z3 = s["FSDP2 / ZeRO-3 over 2 ranks (gloo)"]
    ratio = lambda m, k: m[k] / base[k]  # noqa: E731
    act, step = ratio(ck, "train_memory_activations_bytes"), ratio(ck, "train_step_ms")
    opt8, loss8 = ratio(a8, "train_memory_optimizer_bytes"), a8["train_loss"] / base["train_loss"] - 1
    peak_lora = ratio(lora, "train_peak_memory_bytes")
    q_params = ratio(q, "train_memory_params_bytes")
    qb = base_weights["nf4_bytes"] / base_weights["fp32_bytes"]
    state = lambda m: m["train_memory_model_state_bytes"]  # noqa: E731
    z3_state = state(z3) / state(base)
    z3_diff = _curve_rel_diff(z3["loss_curve"], base["loss_curve"])
    est = {f"{w} ({label.split(':')[0]})": m["estimate_error"] for w, rows in r.items() for label, m in rows.items()
           if "estimate_error" in m and label.startswith("baseline")}
    worst = max(est, key=lambda k: abs(est[k]))
    ppl_before = lora["eval_loss_before"]
    return [
        ("activation checkpointing: activation memory ≤ 0.5× at step time ≤ 1.4×",
         f"activations ×{act:.2f}, step time ×{step:.2f}", act <= 0.5 and step <= 1.4),
        ("8-bit AdamW: optimizer-state bytes ≤ 0.3× fp32 AdamW's, final loss within 2 %",
         f"states ×{opt8:.3f}, final loss {loss8:+.2%}", opt8 <= 0.3 and abs(loss8) <= 0.02),
        ("LoRA: trainable parameters ≤ 1 %, peak memory ≤ 0.6× full fine-tune",
         f"trainable {lora['trainable_fraction']:.2%}, peak ×{peak_lora:.2f}",
         lora["trainable_fraction"] <= 0.01 and peak_lora <= 0.6),
        ("QLoRA: base weight bytes ≤ 0.3×",
         f"the {base_weights['layers']} quantized projections ×{qb:.3f} of fp32 "
         f"(×{base_weights['nf4_bytes'] / base_weights['bf16_bytes']:.3f} of 16-bit); the whole model's parameters "
         f"and buffers while training ×{q_params:.3f} (the tied embeddings stay fp32)", qb <= 0.3),
        ("FSDP / ZeRO-3 over 2 ranks: per-rank parameter + gradient + optimizer bytes ≤ 0.55× of one process",
         f"×{z3_state:.3f}", z3_state <= 0.55),
        ("… loss curve equal within 1e-4 relative", f"max relative difference {z3_diff:.1e} over "
                                                     f"{len(base['loss_curve'])} steps", z3_diff <= 1e-4),
        ("estimator: measured peak within 15 % of the estimate on every built-in workload",
         ", ".join(f"{k} {v:+.0%}" for k, v in est.items()) + f" (worst {worst})", all(abs(v) <= 0.15 for v in est.values())),
        ("a LoRA fine-tune of smollm2-135m lowers held-out perplexity within the default budget",
         f"held-out loss {ppl_before:.4f} → {lora['eval_loss']:.4f}; perplexity on the test windows "
         f"{lora['perplexity']:.3f}", lora["eval_loss"] < ppl_before),
    ]


def render(data: dict[str, Any], commit: str) -> str:
    r, env, cfg = data["results"], data["env"], data["cfg"]
    mib = lambda v: f"{v / 2**20:.1f}"  # noqa: E731
    lines = [
        "# Training: the goal table (generated by `python -m benchmarks bench_training`)", "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}",
        f"- machine: {env['cpu']}, ISA {env['cpu_isa']}, {env['threads']} threads; torch {env['torch']}, "
        f"transformers {env['transformers']}",
        f"- budget: {cfg['steps']} optimizer steps of {cfg['batch_size']} × {cfg['seq_len']} tokens, "
        f"{cfg['warmup']} warm-up + 1 profiled step untimed, lr {cfg['lr']:g} (adapters 1e-3), seed {cfg['seed']}; "
        "every row trains a copy of the same starting model on the same batches, ratios against its workload's "
        "baseline row in this run; memory is one step's peak from torch's accounting (one rank's when sharded; "
        "sharded rows run 2 processes on the same cores).",
        "", "## Goals", "", "| goal | measured | met |", "|---|---|---|",
    ]
    for goal, got, ok in goals(r, data["qlora_base"]):
        lines.append(f"| {goal} | {got} | {'✅' if ok else ('❌' if ok is False else '—')} |")
    for name, rows in r.items():
        base = next(iter(rows.values()))
        lines += ["", f"## {name}", "",
                  "| recipe | step ms (p90−p10) | ×time | tok/s | peak MiB | ×peak | params / grads / optimizer / "
                  "activations MiB | trainable | loss first → last | held-out loss | perplexity | estimate error |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, m in rows.items():
            lines.append(
                f"| {label} | {m['train_step_ms']:.0f} ({m['train_step_spread_ms']:.0f}) | "
                f"×{m['train_step_ms'] / base['train_step_ms']:.2f} | {m['train_tokens_per_s']:.0f} | "
                f"{mib(m['train_peak_memory_bytes'])} | ×{m['train_peak_memory_bytes'] / base['train_peak_memory_bytes']:.2f} | "
                f"{mib(m['train_memory_params_bytes'])} / {mib(m['train_memory_grads_bytes'])} / "
                f"{mib(m['train_memory_optimizer_bytes'])} / {mib(m['train_memory_activations_bytes'])} | "
                f"{m['trainable_fraction']:.2%} | {m['train_loss_first']:.3f} → {m['train_loss']:.3f} | "
                f"{m['eval_loss_before']:.3f} → {m['eval_loss']:.3f} | {m.get('perplexity', float('nan')):.3f} | "
                + (f"{m['estimate_error']:+.0%}" if "estimate_error" in m else "—") + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from benchmarks import write_goal_table

    write_goal_table(OUT, measure_all, render)


if __name__ == "__main__":
    main()
