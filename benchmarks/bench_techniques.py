"""The README's "Measured here" table, generated: real runs of the pipeline (the same code path
as ``speedbook run``) on the reference workloads, each ratio against the baseline measured in
the same run, bytes also against a 16-bit copy, with the playbook's gates as the goal beside
each row. Writes ``benchmarks/RESULTS.md`` (date, CPU model and ISA, threads, commit) and
prints the same table. ``python -m benchmarks bench_techniques [label…]`` runs a subset."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

# (label, workload, steps, gates): each a small playbook, judged in the inference scenario
ROWS: list[tuple[str, str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("half_precision bf16", "ref-lm", [{"technique": "half_precision", "params": {"dtype": "bf16"}}],
     [{"metric": "perplexity", "max_ratio": 1.01}, {"metric": "stored_bytes_vs_16bit", "max": 1.0}]),
    ("int8_dynamic (+ torchao peer)", "ref-lm", [{"technique": "int8_dynamic", "params": {"compare_torchao": True}}],
     [{"metric": "perplexity", "max_ratio": 1.02}, {"metric": "stored_bytes", "max_ratio": 0.7}]),
    ("int8_dynamic", "minilm", [{"technique": "int8_dynamic"}],
     [{"metric": "embedding_cosine", "min": 0.95}, {"metric": "latency_ms", "max_ratio": 1.0}]),
    ("int4_weight_only g128", "ref-lm", [{"technique": "int4_weight_only", "params": {"group_size": 128}}],
     [{"metric": "perplexity", "max_ratio": 1.05}, {"metric": "stored_bytes_vs_16bit", "max": 0.6}]),
    ("gptq 4-bit g128 → export", "ref-lm",
     [{"technique": "gptq", "params": {"bits": 4, "group_size": 128}}, {"technique": "export_compressed_tensors"}],
     [{"metric": "perplexity", "max_ratio": 1.03}, {"metric": "stored_bytes_vs_16bit", "max": 0.6}]),
    ("smoothquant → export", "ref-lm", [{"technique": "smoothquant"}, {"technique": "export_compressed_tensors"}],
     [{"metric": "perplexity", "max_ratio": 1.02}]),
    ("wanda 2:4", "ref-lm", [{"technique": "wanda", "params": {"pattern": "2:4"}}],
     [{"metric": "perplexity", "max_ratio": 1.3}]),
    ("structured_pruning 25 % → svd", "ref-lm",
     [{"technique": "structured_pruning", "params": {"amount": 0.25}}, {"technique": "svd_factorization"}],
     [{"metric": "perplexity", "max_ratio": 1.5}, {"metric": "stored_bytes", "max_ratio": 0.8}]),
    ("speculative_decoding (draft ref-lm-draft)", "ref-lm", [{"technique": "speculative_decoding"}],
     [{"metric": "decode_tokens_per_s", "min_ratio": 1.0}]),
    ("torch_compile", "ref-lm", [{"technique": "torch_compile"}],
     [{"metric": "latency_ms", "max_ratio": 1.0}, {"metric": "decode_tokens_per_s", "min_ratio": 1.0}]),
    # the real pretrained LLM (issue 11's goals as gates). Its in_features (576) admit groups of 32 or 64,
    # not 128; 64 is the honest comparison, since the Q4_1 source already lies on a 4-bit grid of 32
    ("half_precision bf16", "smollm2-135m", [{"technique": "half_precision", "params": {"dtype": "bf16"}}],
     [{"metric": "perplexity", "max_ratio": 1.01}]),
    ("int8_dynamic", "smollm2-135m", [{"technique": "int8_dynamic"}],
     [{"metric": "decode_tokens_per_s", "min_ratio": 1.8}, {"metric": "perplexity", "max_ratio": 1.03}]),
    ("bf16 → int4_weight_only g64", "smollm2-135m",
     [{"technique": "half_precision", "params": {"dtype": "bf16"}}, {"technique": "int4_weight_only", "params": {"group_size": 64}}],
     [{"metric": "decode_tokens_per_s", "min_ratio": 2.5}, {"metric": "perplexity", "max_ratio": 1.03}]),
    ("int4_weight_only g64 [bf16 baseline]", "smollm2-135m", [{"technique": "int4_weight_only", "params": {"group_size": 64}}],
     [{"metric": "decode_tokens_per_s", "min_ratio": 1.5}, {"metric": "decode_bandwidth_fraction", "min": 0.5}]),
    ("gptq 4-bit g64 [bf16 baseline]", "smollm2-135m", [{"technique": "gptq", "params": {"bits": 4, "group_size": 64}}],
     [{"metric": "decode_tokens_per_s", "min_ratio": 1.5}, {"metric": "perplexity", "max_ratio": 1.03}]),
    ("int8_weight_only [bf16 baseline]", "smollm2-135m", [{"technique": "int8_weight_only"}],
     [{"metric": "decode_tokens_per_s", "min_ratio": 1.0}, {"metric": "perplexity", "max_ratio": 1.01}]),
]


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _ratio(step: dict[str, float], base: dict[str, float], name: str) -> float | None:
    a, b = step.get(name), base.get(name)
    return a / b if a is not None and b else None


def _x(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"×{v:.{digits}f}"


def _quality(base: dict[str, float], m: dict[str, float]) -> str:
    if "perplexity" in m:
        out = f"ppl {base['perplexity']:.2f} → {m['perplexity']:.2f}"
        return out + (f", KL {m['kl_divergence']:.2g}" if "kl_divergence" in m else "")
    if "embedding_cosine" in m:
        return f"cosine to baseline {m['embedding_cosine']:.3f}"
    if "accuracy" in m:
        return f"accuracy {base['accuracy']:.3f} → {m['accuracy']:.3f}"
    return "—"


def _notes(summary: dict[str, Any]) -> str:
    notes = []
    for step in summary["steps"]:
        d, m = step.get("diagnostics") or {}, step.get("metrics") or {}
        if step["status"] != "succeeded":
            notes.append(f"{step['technique']} {step['status']}")
        if "compile_time_s" in d:
            notes.append(f"compile {d['compile_time_s']:.0f} s")
        if "gptq_layer_error_mean" in d:
            notes.append(f"GPTQ mean layer error {d['gptq_layer_error_mean']:.3g}")
        if "greedy_match" in m:
            notes.append(f"greedy output identical: {'yes' if m['greedy_match'] == 1.0 else 'no'}, "
                         f"α {m.get('spec_acceptance_rate', 0):.2f}, {m.get('spec_mean_accepted_length', 0):.2f} tokens "
                         f"per round, ×{m.get('spec_speedup', 0):.2f} measured vs ×"
                         f"{m.get('spec_speedup_analytical', 0):.2f} analytical")
        if step.get("check", {}).get("export_max_abs_weight_diff") is not None:
            notes.append(f"export reloads, max |Δw| {step['check']['export_max_abs_weight_diff']:.1g}")
        for variant, values in (step.get("peers") or {}).items():
            base = summary["baseline"]
            notes.append(f"{variant} same run: bytes {_x(_ratio(values, base, 'stored_bytes'), 3)}, "
                         f"{_quality(base, values)}, prefill {_x(_ratio(base, values, 'latency_ms'))}")
    return "; ".join(notes)


def _bandwidth(m: dict[str, float]) -> str:
    if "decode_bandwidth_gb_per_s" not in m:
        return "—"
    return f"{m['decode_bandwidth_gb_per_s']:.1f} ({m['decode_bandwidth_fraction']:.0%} of {m['copy_gb_per_s']:.1f})"


def _goal(gates: list[dict[str, Any]]) -> str:
    return "; ".join(f"{'✅' if g['ok'] else ('❌' if g['ok'] is False else '—')} {g['detail']}" for g in gates) or "—"


def run_row(label: str, workload: str, steps: list[dict[str, Any]], gates: list[dict[str, Any]]) -> dict[str, Any]:
    from db import queries
    from db.session import session_scope
    from jobs import pipeline, submit

    pb = submit.validate_request({"name": "bench", "title": label, "steps": steps, "expect": gates}, workload, "cpu",
                                 scenario="inference")
    run_id = submit.create_run(pb, workload, "cpu", baseline_dtype="bf16" if "[bf16 baseline]" in label else "fp32")
    pipeline.execute_run(run_id, worker="bench")
    with session_scope() as s:
        return queries.run_summary(queries.get_run(s, run_id))


def table(results: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    lines = ["| run | workload | stored bytes ×baseline | ×16-bit copy | bits/param | quality | prefill speed | "
             "decode speed | decode GB/s (of copy) | peak memory | notes | goal (gates) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, workload, s in results:
        base, fin = s["baseline"], s["final"]
        if s["status"] != "succeeded":
            lines.append(f"| {label} | {workload} | {s['status']}: {s['error']} ||||||||||")
            continue
        lines.append("| " + " | ".join([
            label, workload, _x(_ratio(fin, base, "stored_bytes"), 3), f"{fin.get('stored_bytes_vs_16bit', 0):.3f}",
            f"{fin.get('bits_per_param', 0):.2f}", _quality(base, fin),
            _x(_ratio(base, fin, "latency_ms")), _x(_ratio(fin, base, "decode_tokens_per_s")), _bandwidth(fin),
            _x(_ratio(fin, base, "peak_memory_bytes")), _notes(s), _goal(s["gates"])]) + " |")
    return lines


def from_db() -> list[tuple[str, str, dict[str, Any]]]:
    """The latest stored bench run of each row, re-rendered without measuring again (for a bench
    that was stopped part-way: the rows it finished are in the database)."""
    from db import queries
    from db.models import Run
    from db.session import session_scope

    out = []
    with session_scope() as s:
        runs = s.query(Run).filter(Run.worker == "bench", Run.status == "succeeded").order_by(Run.id).all()
        latest = {}
        for run in runs:
            latest[(run.playbook_snapshot.get("title"), run.workload)] = queries.run_summary(run)
    for label, workload, _, _ in ROWS:
        if (label, workload) in latest:
            out.append((label, workload, latest[(label, workload)]))
    return out


def main(labels: list[str] | None = None) -> None:
    from db.migrate import upgrade
    from db.session import database_url
    from optimizers.measure import environment

    upgrade(database_url())
    env = environment("cpu")
    stored = labels == ["--from-db"]
    rows = [r for r in ROWS if not labels or stored or r[0] in labels]
    results = from_db() if stored else []
    for label, workload, steps, gates in ([] if stored else rows):
        print(f"running {label} on {workload} …", flush=True)
        results.append((label, workload, run_row(label, workload, steps, gates)))
        print(table(results[-1:])[-1], flush=True)
    missing = [f"{r[0]} ({r[1]})" for r in rows if (r[0], r[1]) not in {(a, b) for a, b, _ in results}]
    header = [
        "# Measured here (generated by `make bench`: benchmarks/bench_techniques.py)",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {_commit()}",
        f"- machine: {env['cpu']}, ISA {env['cpu_isa']}, {env['threads']} threads; torch {env['torch']}, "
        f"transformers {env['transformers']}",
        "- every figure measured by the pipeline (`speedbook run`'s code path) against the fp32 baseline measured in "
        "the same run (fp32, or bf16 where the row says so); prefill speed = baseline latency ÷ step latency (median after warm-up), decode speed = "
        "step tok/s ÷ baseline tok/s (a run with a speculative step decodes through generate() in its baseline too);"
        " ×16-bit copy = stored bytes ÷ (2 bytes × parameters). Speed on 2 shared cores varies ±10–30 % run to run.",
        *([f"- rows not measured in this bench (stopped before them): {', '.join(missing)}"] if missing else []),
        *(["- re-rendered from the bench's stored runs (`python -m benchmarks.bench_techniques --from-db`)"]
          if stored else []),
        "",
    ]
    text = "\n".join(header + table(results)) + "\n"
    if labels and not stored:  # a subset never overwrites the committed full table
        print(text)
        return
    RESULTS.write_text(text)
    print(text)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main(sys.argv[1:] or None)
