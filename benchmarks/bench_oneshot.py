"""Issue 15's goal table — the rest of one-shot compression and the edge runtime — generated:
every row applies the technique modules a playbook step runs (``optimizers/techniques``) to a
fresh copy of the workload and measures the result with the inference scenario's protocol
(``optimizers.measure.measure``: perplexity over the committed held-out windows, accuracy on
the held-out digits, embedding cosine and pair Spearman for minilm, stored bytes, latency),
against the unchanged model measured in the same run. A latency ratio comes from interleaved
repeats of the baseline and the row in the same process, with its bootstrap interval
(``optimizers.stats``).
Writes ``benchmarks/ONESHOT.md``.

``python -m benchmarks bench_oneshot`` (part of ``make bench``)."""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, Callable

OUT = Path(__file__).resolve().parent / "ONESHOT.md"
HALF = {"compare": []}
DEEP_COMPRESSION = [("magnitude_pruning", {"amount": 0.8, "include_conv": True}),
                    ("recovery_finetune", {"steps": 300, "batch_size": 32}),
                    ("weight_sharing", {"bits": 4, "finetune_codebook": True, "finetune_steps": 100}),
                    ("huffman_coding", {})]  # the steps of playbooks/library/deep-compression.yaml  # SparseGPT's own peers are the wanda / magnitude rows below, measured alike

# (workload, label, [(technique, params), …], timed): each row's steps applied in order to the unchanged model
ROWS: list[tuple[str, str, list[tuple[str, dict[str, Any]]], bool]] = [
    ("ref-lm", "magnitude 50 % (per layer)", [("magnitude_pruning", {"amount": 0.5, "scope": "layer"})], False),
    ("ref-lm", "Wanda 50 %", [("wanda", {"sparsity": 0.5})], False),
    ("ref-lm", "SparseGPT 50 %", [("sparsegpt", {"sparsity": 0.5, **HALF})], False),
    ("ref-lm", "magnitude 2:4", [("nm_sparsity", {"pattern": "2:4"})], False),
    ("ref-lm", "Wanda 2:4", [("wanda", {"pattern": "2:4"})], False),
    ("ref-lm", "SparseGPT 2:4", [("sparsegpt", {"pattern": "2:4", **HALF})], False),
    ("ref-lm", "SparseGPT 4:8", [("sparsegpt", {"pattern": "4:8", **HALF})], False),
    ("ref-lm", "SparseGPT 50 % + joint 4-bit (group 64)", [("sparsegpt", {"bits": 4, "group_size": 64, **HALF})], False),
    ("ref-lm", "head pruning 25 % of query heads (gradient importance)", [("head_pruning", {"amount": 0.25})], False),
    ("ref-lm", "head pruning 1 of 2 K/V groups per layer", [("head_pruning", {"amount": 0.5, "unit": "kv_group"})], False),
    ("smollm2-135m", "magnitude 50 % (per layer)", [("magnitude_pruning", {"amount": 0.5, "scope": "layer"})], False),
    ("smollm2-135m", "Wanda 50 %", [("wanda", {"sparsity": 0.5})], False),
    ("smollm2-135m", "SparseGPT 50 %", [("sparsegpt", {"sparsity": 0.5, **HALF})], False),
    ("minilm", "head pruning 25 % of heads (activation importance)", [("head_pruning", {"amount": 0.25})], True),
    ("minilm", "ONNX Runtime fp32", [("onnx_runtime", {})], True),
    ("minilm", "ONNX Runtime int8 (dynamic)", [("onnx_runtime", {"precision": "int8_dynamic"})], True),
    ("minilm", "ONNX Runtime int8 (static QDQ)", [("onnx_runtime", {"precision": "int8_static"})], True),
    ("digits-cnn", "ONNX Runtime fp32", [("onnx_runtime", {})], True),
    ("digits-cnn", "ONNX Runtime int8 (static QDQ)", [("onnx_runtime", {"precision": "int8_static"})], True),
    ("digits-cnn", "Deep Compression: weight sharing 5 bit (BN folded) → Huffman",
     [("weight_sharing", {"bits": 5}), ("huffman_coding", {})], False),
    ("digits-cnn", "Deep Compression: magnitude 50 % (convs too) → weight sharing 4 bit → Huffman",
     [("magnitude_pruning", {"amount": 0.5, "include_conv": True}), ("weight_sharing", {"bits": 4}), ("huffman_coding", {})],
     False),
    ("digits-cnn", "Deep Compression as the playbook: magnitude 80 % (convs too) → recovery fine-tune (masks kept) "
     "→ weight sharing 4 bit + centroid fine-tune → Huffman", DEEP_COMPRESSION, False),
    ("digits-cnn", "ternary weights (TWN)", [("ternary_weights", {})], False),
    ("digits-cnn", "binary weights (XNOR-Net scaling)", [("binary_weights", {})], False),
    ("digits-cnn", "Tucker-2 decomposition (energy 0.9)", [("tucker_decomposition", {})], True),
    ("digits-cnn", "CP decomposition (max_error 0.3)", [("cp_decomposition", {"max_error": 0.3})], True),
]


def measure_all(log: Callable[[str], None] = print) -> dict[str, Any]:
    from optimizers import registry
    from optimizers.measure import environment, measure, parameter_count
    from optimizers.workloads import load_workload

    loaded: dict[str, Any] = {}
    base: dict[str, dict[str, float]] = {}
    refs: dict[str, Any] = {}
    rows = []
    for name, label, steps, timed in ROWS:
        if name not in loaded:
            loaded[name] = wl = load_workload(name)
            refs[name] = ref = measure(wl, speed=name in ("minilm", "digits-cnn"), memory=False)
            base[name] = {**ref.metrics, "params": float(parameter_count(wl.model))}
            log(f"{name} baseline: {ref.metrics}")
        wl, t0, diag, notes = loaded[name], time.perf_counter(), {}, []
        try:
            for tech_name, params in steps:
                tech = registry.get(tech_name)
                rec = tech.apply(wl, tech.config(params))
                wl, diag, notes = rec.workload, {**diag, **rec.diagnostics}, notes + rec.notes
        except Exception as err:  # a row that cannot run says why in the table; the others still run
            rows.append({"workload": name, "label": label, "error": f"{type(err).__name__}: {err}"})
            log(f"{name} / {label}: FAILED {err}")
            continue
        m = measure(wl, refs[name], speed=timed, memory=False).metrics  # timed: interleaved with the baseline
        rows.append({"workload": name, "label": label, "metrics": m, "diagnostics": diag, "notes": notes,
                     "wall_s": time.perf_counter() - t0})
        log(f"{name} / {label}: {time.perf_counter() - t0:.0f} s, {m}")
    return {"rows": rows, "base": base, "env": environment("cpu")}


def _row(data: dict[str, Any], workload: str, prefix: str) -> dict[str, Any] | None:
    return next((r for r in data["rows"] if r["workload"] == workload and r["label"].startswith(prefix)), None)


def _ok(*rows: dict[str, Any] | None) -> bool:
    return all(r is not None and "metrics" in r for r in rows)


def _interval(r: dict[str, Any]):
    """The row's speed-up over the baseline (baseline latency / row latency) with its interval."""
    from optimizers.stats import stored_interval

    return stored_interval(r["metrics"], "latency_ms").inverse()


def _speedup(r: dict[str, Any]) -> float:
    return _interval(r).ratio


def _sparsegpt_goal(data: dict[str, Any], wl: str) -> tuple[str, bool | None]:
    rows = [_row(data, wl, p) for p in ("SparseGPT 50 %", "Wanda 50 %", "magnitude 50 %")]
    if not _ok(*rows):
        return f"{wl}: not measured ({next((r or {}).get('error', 'row missing') for r in rows if not _ok(r))})", None
    ppl = data["base"][wl]["perplexity"]
    sg, wa, mg = (r["metrics"]["perplexity"] - ppl for r in rows)
    return (f"{wl}: perplexity {ppl:.2f}; rise SparseGPT +{sg:.2f}, Wanda +{wa:.2f} (×{sg / wa:.2f}), "
            f"magnitude +{mg:.2f} (×{sg / mg:.2f})", sg <= 0.8 * wa and sg <= 0.5 * mg)


def goals(data: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    out = []
    for wl in ("ref-lm", "smollm2-135m"):
        got, ok = _sparsegpt_goal(data, wl)
        out.append((f"SparseGPT 50 % on {wl}: perplexity rise ≤ 0.8× Wanda's and ≤ 0.5× magnitude's", got, ok))
    out.append(("2:4 on a CUDA worker: GEMM speed-up against dense ≥ 1.3× on large Linears",
                "no GPU lent to this run: see benchmarks/GPU_RESULTS.md when a CUDA worker measures it", None))
    dc = _row(data, "digits-cnn", "Deep Compression as the playbook")
    digits = data["base"]["digits-cnn"]
    if _ok(dc):
        vs16 = 2 * digits["params"] / dc["metrics"]["stored_bytes"]
        drop = digits["accuracy"] - dc["metrics"]["accuracy"]
        out.append(("Deep Compression on digits-cnn: ≥ 10× smaller than 16-bit at ≤ 1 point accuracy loss",
                    f"×{vs16:.1f} smaller than a 16-bit copy ({dc['metrics']['stored_bytes']:,.0f} B vs "
                    f"{2 * digits['params']:,.0f} B), accuracy {digits['accuracy']:.3f} → {dc['metrics']['accuracy']:.3f}",
                    vs16 >= 10 and drop <= 0.01))
    else:
        out.append(("Deep Compression on digits-cnn: ≥ 10× smaller than 16-bit at ≤ 1 point accuracy loss",
                    f"not measured: {(dc or {}).get('error', 'row missing')}", None))
    onnx8, onnx_cnn = _row(data, "minilm", "ONNX Runtime int8 (static"), _row(data, "digits-cnn", "ONNX Runtime fp32")
    dyn = _row(data, "minilm", "ONNX Runtime int8 (dynamic")
    best = max((r for r in (onnx8, dyn) if _ok(r)), key=_speedup, default=None)
    if best is not None and _ok(onnx_cnn):
        cos = best["metrics"]["embedding_cosine"]
        out.append(("minilm through onnxruntime int8: ≥ 2.5× faster than torch fp32 at embedding cosine ≥ 0.97; "
                    "digits-cnn through onnxruntime ≥ 2× torch",
                    f"minilm {best['label'].split('(')[1].rstrip(')')} {_interval(best).text()} at cosine {cos:.4f}; "
                    f"digits-cnn fp32 {_interval(onnx_cnn).text()}", _speedup(best) >= 2.5 and cos >= 0.97 and _speedup(onnx_cnn) >= 2))
    else:
        out.append(("minilm through onnxruntime int8 ≥ 2.5× at cosine ≥ 0.97; digits-cnn ≥ 2×", "not measured", None))
    hp = _row(data, "minilm", "head pruning 25 %")
    if _ok(hp):
        s0, s1 = data["base"]["minilm"]["pair_spearman"], hp["metrics"]["pair_spearman"]
        out.append(("head pruning of 25 % of heads on minilm: Spearman on its labelled pairs within 0.02",
                    f"pair Spearman {s0:.4f} → {s1:.4f} ({s1 - s0:+.4f}); speed {_interval(hp).text()}", s0 - s1 <= 0.02))
    return out


def _quality(b: dict[str, float]) -> str:
    return next(q for q in ("perplexity", "accuracy", "pair_spearman") if q in b)


def render(data: dict[str, Any], commit: str) -> str:
    env = data["env"]
    lines = [
        "# One-shot compression and the edge runtime: the goal table (generated by `python -m benchmarks bench_oneshot`)",
        "", f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}",
        f"- machine: {env['cpu']}, ISA {env['cpu_isa']}, {env['threads']} threads; torch {env['torch']}, "
        f"transformers {env['transformers']}",
        "- every step is one-shot (no training); quality by the inference scenario's protocol against the unchanged "
        "model in this run; a latency ratio is the baseline's latency over the row's from interleaved repeats of both "
        "in this process (same threads and inputs), with its 95 % bootstrap interval. Every figure is measured here.",
        "", "## Goals", "", "| goal | measured | met |", "|---|---|---|",
    ]
    for goal, got, ok in goals(data):
        lines.append(f"| {goal} | {got} | {'✅' if ok else ('❌' if ok is False else '— not measured')} |")
    for name, b in data["base"].items():
        q = _quality(b)
        lines += ["", f"## {name}", "", f"| steps | {q} | Δ{q} | stored bytes | ×bytes | ×16-bit copy | "
                  "speed-up [95 % interval] | fidelity | wall s |", "|---|---|---|---|---|---|---|---|---|",
                  f"| unchanged model ({b['params']:,.0f} parameters) | {b[q]:.4f} | — | {b['stored_bytes']:,.0f} | ×1.000 | "
                  f"×{b['stored_bytes'] / (2 * b['params']):.3f} | — | — | — |"]
        for r in (r for r in data["rows"] if r["workload"] == name):
            if "metrics" not in r:
                lines.append(f"| {r['label']} | failed: {r['error'][:160]} | | | | | | | |")
                continue
            m = r["metrics"]
            fid = (f"cos {m['embedding_cosine']:.4f}" if "embedding_cosine" in m
                   else f"top-1 {m['top1_agreement']:.3f}" if "top1_agreement" in m else "—")
            lat = f"{_interval(r).text()} ({m['latency_ms']:.2f} ms)" if "latency_ms_ci_ratio" in m else "—"
            lines.append(f"| {r['label']} | {m[q]:.4f} | {m[q] - b[q]:+.4f} | {m['stored_bytes']:,.0f} | "
                         f"×{m['stored_bytes'] / b['stored_bytes']:.3f} | ×{m['stored_bytes'] / (2 * b['params']):.3f} | "
                         f"{lat} | {fid} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from benchmarks import write_goal_table

    write_goal_table(OUT, measure_all, render)


if __name__ == "__main__":
    main()
