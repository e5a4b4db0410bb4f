"""Issue 14's goal table — compression that trains — generated: every row applies the technique
module a playbook step runs (``optimizers/techniques``) to a fresh copy of the workload and
judges the result by the inference scenario's quality protocol (``optimizers.measure.quality``:
perplexity over the committed held-out windows, accuracy on the held-out digits), against the
unchanged model measured in the same run. Distillation is judged against the same student
trained on the same batches without the teacher (the step's own control). Writes
``benchmarks/COMPRESSION.md``.

``python -m benchmarks bench_compression`` (part of ``make bench``; ~20 min on 2 cores)."""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, Callable

OUT = Path(__file__).resolve().parent / "COMPRESSION.md"
LM_STEPS = 300  # optimizer steps of 8 × 128 tokens for the ref-lm rows
SPARSE = {"sparsity": 0.5, "steps": LM_STEPS, "distill": True}
MQA_LR = 3e-4  # of 3e-4 and 1e-3 in a trial run, the better
MQA_STEPS = 430  # 430 × 8 × 128 tokens: 5 % of ref-lm's 8.86 M pretraining tokens, the paper's uptraining share

# (workload, label, [(technique, params), …]): each row's steps applied in order to the unchanged model
KD = {"temperature": 1.0, "alpha": 0.9}  # the better of (T=2, α=0.5) and (T=1, α=0.9) on ref-lm in a trial run

# (workload, label, [(technique, params), …]): each row's steps applied in order to the unchanged model
ROWS: list[tuple[str, str, list[tuple[str, dict[str, Any]]]]] = [
    ("ref-lm", "KD from scratch: ref-lm-draft's architecture, fresh init, taught by ref-lm (T=1, α=0.9, lr 1e-3)",
     [("knowledge_distillation", {"student": "draft", "student_init": "random", "steps": LM_STEPS, "lr": 1e-3, **KD})]),
    ("ref-lm", "KD from scratch, Hinton's classic T=2, α=0.5 (lr 1e-3)",
     [("knowledge_distillation", {"student": "draft", "student_init": "random", "steps": LM_STEPS, "lr": 1e-3})]),
    ("ref-lm", "KD continuing the pretrained ref-lm-draft (T=1, α=0.9)",
     [("knowledge_distillation", {"student": "draft", "steps": LM_STEPS, **KD})]),
    ("ref-lm", "KD: every second block of ref-lm (DistilBERT init, T=1, α=0.9)",
     [("knowledge_distillation", {"student": "every_second_layer", "steps": LM_STEPS, **KD})]),
    ("ref-lm", "feature KD: every second block + hidden states (β=1, T=1, α=0.9)",
     [("feature_distillation", {"student": "every_second_layer", "steps": LM_STEPS, **KD})]),
    ("ref-lm", "one-shot magnitude pruning 50 % (global)", [("magnitude_pruning", {"amount": 0.5})]),
    ("ref-lm", "one-shot magnitude 50 % + recovery fine-tune (KD from the dense model)",
     [("magnitude_pruning", {"amount": 0.5}), ("recovery_finetune", {"steps": LM_STEPS, "teacher": "original"})]),
    ("ref-lm", "one-shot magnitude 50 % + recovery fine-tune (no teacher)",
     [("magnitude_pruning", {"amount": 0.5}), ("recovery_finetune", {"steps": LM_STEPS})]),
    ("ref-lm", "GMP to 50 % (per layer, cubic schedule, distilled)", [("gmp", SPARSE)]),
    ("ref-lm", "GMP to 50 % (per layer, cubic schedule, no teacher)", [("gmp", {**SPARSE, "distill": False})]),
    ("ref-lm", "movement pruning to 50 % (per layer, distilled)", [("movement_pruning", SPARSE)]),
    ("ref-lm", "iterative pruning to 50 % (3 rounds, distilled)",
     [("iterative_pruning", {**SPARSE, "steps": LM_STEPS // 3, "rounds": 3})]),
    ("ref-lm", "RigL at 50 % (distilled)", [("rigl", SPARSE)]),
    ("ref-lm", "SET at 50 % (distilled)", [("set_sparse", SPARSE)]),
    ("ref-lm", "SNIP at 50 % (distilled)", [("snip", SPARSE)]),
    ("ref-lm", "lottery ticket 50 %, rewound to the start (distilled)",
     [("lottery_ticket", {**SPARSE, "steps": LM_STEPS // 2})]),
    ("ref-lm", "MQA: 2 → 1 KV heads, mean-pooled, not uptrained", [("mqa", {"uptrain": False})]),
    ("ref-lm", "MQA: 2 → 1 KV heads, mean-pooled, uptrained (distilled)", [("mqa", {"steps": MQA_STEPS, "lr": MQA_LR})]),
    ("ref-lm", "LayerDrop p=0.2 fine-tune, then every other block removed (4 → 2)",
     [("layerdrop", {"steps": LM_STEPS})]),
    ("ref-lm", "MoE upcycling: every MLP → 4 experts, top-2 routing", [("moe_upcycling", {"steps": LM_STEPS})]),
    ("digits-cnn", "structured pruning 25 % of filters", [("structured_pruning", {"amount": 0.25})]),
    ("digits-cnn", "edge-vision: structured 25 % → recovery fine-tune → int8 dynamic",
     [("structured_pruning", {"amount": 0.25}), ("recovery_finetune", {"steps": 150, "batch_size": 32}),
      ("int8_dynamic", {})]),
    ("digits-cnn", "early exit (entropy < 0.5 nats)", [("early_exit", {})]),
    ("digits-cnn", "early exit (PABEE patience 2)", [("early_exit", {"criterion": "patience", "patience": 2})]),
]


# the data-level rows run in the training scenario: the same steps on chosen or reordered examples
DATA_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("baseline: shuffled, unpruned windows", {}),
    ("data pruning: the hardest 50 % of twice the windows by EL2N", {"data": {"kind": "prune", "keep": 0.5}}),
    ("data pruning: the hardest 50 % by loss", {"data": {"kind": "prune", "keep": 0.5, "score": "loss"}}),
    ("curriculum: the baseline's windows easy → hard by loss", {"data": {"kind": "curriculum", "score": "loss"}}),
]


def measure_data(log: Callable[[str], None]) -> list[dict[str, Any]]:
    from optimizers.scenarios.training import TrainingConfig, measure_training
    from optimizers.workloads import load_workload

    wl, cfg, out = load_workload("ref-lm"), TrainingConfig(steps=LM_STEPS, batch_size=8, lr=1e-4), []
    for label, recipe in DATA_ROWS:
        t0 = time.perf_counter()
        m = measure_training(wl, runtime={"training": recipe}, training=cfg).metrics
        out.append({"label": label, "metrics": m, "wall_s": time.perf_counter() - t0})
        log(f"ref-lm / {label}: {time.perf_counter() - t0:.0f} s, eval loss {m['eval_loss']:.4f}")
    return out


def measure_all(log: Callable[[str], None] = print) -> dict[str, Any]:
    from optimizers import registry
    from optimizers.measure import environment, parameter_count, quality, stored_bytes
    from optimizers.workloads import load_workload

    loaded: dict[str, Any] = {}
    base: dict[str, dict[str, float]] = {}
    rows = []
    for name, label, steps in ROWS:
        if name not in loaded:
            loaded[name] = wl = load_workload(name)
            base[name] = {**quality(wl), **kv_bytes(wl), "stored_bytes": float(stored_bytes(wl.model)),
                          "params": float(parameter_count(wl.model))}
        wl, t0, diag = loaded[name], time.perf_counter(), {}
        for tech_name, params in steps:
            tech = registry.get(tech_name)
            rec = tech.apply(wl, tech.config(params))
            wl, diag = rec.workload, {**diag, **rec.diagnostics}
        m = {**quality(wl), **kv_bytes(wl), "stored_bytes": float(stored_bytes(wl.model)),
             "params": float(parameter_count(wl.model))}
        rows.append({"workload": name, "label": label, "metrics": m, "diagnostics": diag,
                     "wall_s": time.perf_counter() - t0})
        log(f"{name} / {label}: {time.perf_counter() - t0:.0f} s, {m}")
    return {"rows": rows, "base": base, "data": measure_data(log), "env": environment("cpu")}


def kv_bytes(wl: Any) -> dict[str, float]:
    """The inference scenario's KV-cache bytes for one evaluation window (LMs)."""
    from optimizers.measure import lm_kv_cache

    return {"kv_cache_bytes": lm_kv_cache(wl, None)["kv_cache_bytes"]} if wl.task == "causal_lm" else {}


def _row(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(r for r in data["rows"] if r["label"].startswith(prefix))


def _gap_closed(row: dict[str, Any], teacher: float) -> tuple[float, float, float]:
    ctl, got = row["diagnostics"]["control_perplexity"], row["metrics"]["perplexity"]
    return ctl, got, (ctl - got) / (ctl - teacher)


def goals(data: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    teacher = data["base"]["ref-lm"]["perplexity"]
    ctl, got, closed = _gap_closed(_row(data, "KD from scratch: ref-lm-draft"), teacher)
    p_ctl, p_got, p_closed = _gap_closed(_row(data, "KD continuing the pretrained"), teacher)
    one_shot = _row(data, "one-shot magnitude pruning")["metrics"]["perplexity"] - teacher
    sparse_rows = [_row(data, "GMP to 50 % (per layer, cubic schedule, distilled)"), _row(data, "movement pruning")]
    rises = {r["label"].split(" (")[0]: r["metrics"]["perplexity"] - teacher for r in sparse_rows}
    best = min(rises, key=rises.get)
    edge, digits = _row(data, "edge-vision"), data["base"]["digits-cnn"]
    edge_bytes = edge["metrics"]["stored_bytes"] / digits["stored_bytes"]
    exits = [_row(data, "early exit (entropy"), _row(data, "early exit (PABEE")]
    exit_ok = lambda r: (r["diagnostics"]["blocks_saved_fraction"] >= 0.30  # noqa: E731
                         and r["metrics"]["accuracy"] >= digits["accuracy"] - 0.01)
    mqa, mqa0 = _row(data, "MQA: 2 → 1 KV heads, mean-pooled, uptrained"), _row(data, "MQA: 2 → 1 KV heads, mean-pooled, not")
    kv = mqa["metrics"]["kv_cache_bytes"] / data["base"]["ref-lm"]["kv_cache_bytes"]
    mqa_rise = mqa["metrics"]["perplexity"] / teacher - 1
    return [
        ("distillation: the distilled ref-lm-draft closes ≥ 30 % of the perplexity gap between the undistilled "
         "student and the teacher, same token budget",
         f"from scratch: teacher {teacher:.2f}, student without teacher {ctl:.2f}, distilled {got:.2f}: "
         f"{closed:.0%} of the gap; continuing the pretrained draft: {p_ctl:.2f} → {p_got:.2f}, {p_closed:.0%}",
         closed >= 0.30),
        ("edge-vision on digits-cnn with recovery fine-tuning: accuracy ≥ 0.97 at ≤ 0.6× stored bytes",
         f"accuracy {edge['metrics']['accuracy']:.3f} (baseline {digits['accuracy']:.3f}; one-shot pruning alone "
         f"{_row(data, 'structured pruning')['metrics']['accuracy']:.3f}), stored bytes ×{edge_bytes:.3f} "
         f"(×{edge['metrics']['stored_bytes'] / (2 * digits['params']):.3f} of a 16-bit copy)",
         edge["metrics"]["accuracy"] >= 0.97 and edge_bytes <= 0.6),
        ("movement pruning / GMP at 50 % on ref-lm: perplexity rise ≤ half of one-shot magnitude pruning's",
         f"one-shot +{one_shot:.2f}; " + ", ".join(f"{k} +{v:.2f} (×{v / one_shot:.2f})" for k, v in rises.items()),
         rises[best] <= 0.5 * one_shot),
        ("early exit on digits-cnn: ≥ 30 % fewer layers executed on average at ≤ 1 point accuracy loss",
         "; ".join(f"{r['label'].split('(')[1].rstrip(')')}: {r['diagnostics']['blocks_saved_fraction']:.0%} fewer "
                   f"blocks ({r['diagnostics']['exited_early_fraction']:.0%} exit early), accuracy "
                   f"{digits['accuracy']:.3f} → {r['metrics']['accuracy']:.3f}" for r in exits),
         any(exit_ok(r) for r in exits)),
        ("GQA conversion 2 → 1 KV heads on ref-lm after uptraining: KV bytes 0.5×, perplexity ≤ +5 %",
         f"KV cache ×{kv:.2f}; perplexity {teacher:.2f} → {mqa0['metrics']['perplexity']:.2f} pooled → "
         f"{mqa['metrics']['perplexity']:.2f} after {MQA_STEPS} uptraining steps, 5 % of its pretraining tokens "
         f"({mqa_rise:+.1%})",
         kv <= 0.5 + 1e-9 and mqa_rise <= 0.05),
    ]


def render(data: dict[str, Any], commit: str) -> str:
    env = data["env"]
    lines = [
        "# Compression that trains: the goal table (generated by `python -m benchmarks bench_compression`)", "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}",
        f"- machine: {env['cpu']}, ISA {env['cpu_isa']}, {env['threads']} threads; torch {env['torch']}, "
        f"transformers {env['transformers']}",
        f"- budget: ref-lm rows train {LM_STEPS} AdamW steps of 8 × 128 tokens (lr 1e-4) on the stdlib training "
        "split (MQA uptraining: 430 steps, lr 3e-4); digits-cnn 150 steps of 32 images (lr 1e-3; the early-exit heads "
        "300 steps, lr 3e-2). Quality is the inference scenario's: perplexity over "
        "the committed held-out windows, accuracy over the held-out digits; ratios against the unchanged model in "
        "this run. Every figure is measured here.",
        "", "## Goals", "", "| goal | measured | met |", "|---|---|---|",
    ]
    for goal, got, ok in goals(data):
        lines.append(f"| {goal} | {got} | {'✅' if ok else ('❌' if ok is False else '— not measured')} |")
    for name, b in data["base"].items():
        q = "perplexity" if "perplexity" in b else "accuracy"
        lines += ["", f"## {name}", "", f"| steps | {q} | ×{q} | stored bytes | ×bytes | params | "
                  "train steps | train tok/s | peak train MiB | control (no teacher) | wall s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|",
                  f"| unchanged model | {b[q]:.3f} | ×1.000 | {b['stored_bytes'] / 1e6:.2f} MB | ×1.000 | "
                  f"{b['params']:,.0f} | — | — | — | — | — |"]
        for r in (r for r in data["rows"] if r["workload"] == name):
            m, d = r["metrics"], r["diagnostics"]
            ctl = d.get(f"control_{q}")
            lines.append(
                f"| {r['label']} | {m[q]:.3f} | ×{m[q] / b[q]:.3f} | {m['stored_bytes'] / 1e6:.2f} MB | "
                f"×{m['stored_bytes'] / b['stored_bytes']:.3f} | {m['params']:,.0f} | "
                + (f"{d['train_steps']:.0f} | {d['train_tokens_per_s']:.0f} | {d['train_peak_memory_bytes'] / 2**20:.0f}"
                   if "train_steps" in d else "— | — | —")
                + f" | {'—' if ctl is None else f'{ctl:.3f}'} | {r['wall_s']:.0f} |")
    base = data["data"][0]["metrics"]
    lines += ["", "## Data-level (ref-lm, training scenario)", "",
              f"Every row trains the same {LM_STEPS} steps of 8 × 128 tokens (the same token budget) from the same "
              "model; the held-out loss is over the same windows.", "",
              "| training data | held-out loss before → after | ×loss vs baseline | perplexity | wall s |",
              "|---|---|---|---|---|"]
    for r in data["data"]:
        m = r["metrics"]
        lines.append(f"| {r['label']} | {m['eval_loss_before']:.4f} → {m['eval_loss']:.4f} | "
                     f"×{m['eval_loss'] / base['eval_loss']:.4f} | {m['perplexity']:.3f} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from benchmarks import write_goal_table

    write_goal_table(OUT, measure_all, render)


if __name__ == "__main__":
    main()
