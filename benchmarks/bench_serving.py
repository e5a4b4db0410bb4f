"""Issue 12's goal table for the serving scenario, generated: smollm2-135m (fp32, the CPU
baseline dtype), one process, every engine serving the same seeded trace through
``optimizers.scenarios.serving`` — the code ``speedbook run --scenario serving`` measures with —
against one-at-a-time serving by the lean decode loop measured in the same run. Prints each goal
with the measured figure and whether it is met, and writes ``benchmarks/SERVING.md``.

``python -m benchmarks bench_serving`` (part of ``make bench``; ~20 min on 2 cores)."""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, Callable

OUT = Path(__file__).resolve().parent / "SERVING.md"
WORKLOAD = "smollm2-135m"
CONCURRENCY = 16
PREFIX = 512

# (label, trace overrides, settings): each trace is served by the baseline engine too, in this run
LOAD = {"requests": 16, "max_concurrency": CONCURRENCY}
SHARED = {"requests": 16, "max_concurrency": CONCURRENCY, "shared_prefix_tokens": PREFIX,
          "prompt_tokens": (PREFIX + 32, PREFIX + 96)}
ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("one at a time (lean loop)", "load", {}),
    ("static batching", "load", {"batching": "static"}),
    ("continuous batching + paged KV (16-token pages)", "load", {"batching": "continuous", "kv_page_size": 16}),
    ("… + chunked prefill (128 tokens/step)", "load", {"batching": "continuous", "kv_page_size": 16,
                                                       "max_batch_tokens": 128}),
    ("one at a time + speculative (prompt lookup, γ 4)", "load",
     {"speculative": {"source": "prompt_lookup", "gamma": 4, "ngram_max": 3}}),
    (f"static batches of {CONCURRENCY} + speculative (prompt lookup, γ 4), batched verification", "load",
     {"batching": "static", "speculative": {"source": "prompt_lookup", "gamma": 4, "ngram_max": 3}}),
    (f"one at a time, {PREFIX}-token shared prefix", "shared", {}),
    (f"continuous batching, {PREFIX}-token shared prefix", "shared", {"batching": "continuous", "kv_page_size": 16}),
    ("… + prefix caching", "shared", {"batching": "continuous", "kv_page_size": 16, "prefix_caching": True}),
]
SWEEP = (1, 4, 16)  # continuous batching at these concurrency levels, same 16 requests


def measure_all(log: Callable[[str], None] = print) -> dict[str, Any]:
    from optimizers.measure import environment
    from optimizers.scenarios.serving import figures, serve
    from optimizers.scenarios.trace import TraceConfig, make_trace
    from optimizers.workloads import load_workload

    wl = load_workload(WORKLOAD)
    traces = {"load": TraceConfig(**LOAD), "shared": TraceConfig(**SHARED)}
    requests = {k: make_trace(wl.eval.token_ids, cfg) for k, cfg in traces.items()}
    reference: dict[str, list[list[int]]] = {}
    results: dict[str, dict[str, float]] = {}
    for label, trace, settings in ROWS:
        t0 = time.perf_counter()
        out = serve(wl, requests[trace], traces[trace], settings)
        tokens = [s.tokens for s in out.served]
        reference.setdefault(trace, tokens)  # the first row of each trace is its one-at-a-time baseline
        results[label] = figures(out, reference[trace]) | {"trace": trace}
        log(f"{label}: {time.perf_counter() - t0:.0f} s, {results[label]['throughput_tokens_per_s']:.1f} tok/s")
    sweep: dict[int, dict[str, float]] = {}
    for c in SWEEP:
        cfg = traces["load"].model_copy(update={"max_concurrency": c})
        out = serve(wl, requests["load"], cfg, {"batching": "continuous", "kv_page_size": 16})
        sweep[c] = figures(out, reference["load"])
        log(f"continuous batching at concurrency {c}: {sweep[c]['throughput_tokens_per_s']:.1f} tok/s")
    inference = _batch_one(wl, log)
    return {"results": results, "sweep": sweep, "inference": inference, "env": environment("cpu"),
            "traces": {k: v.model_dump() for k, v in traces.items()}}


SPEC = [("speculative, self (first 8 of 30 layers)", {"source": "self", "layers": 8, "gamma": 4}),
        ("speculative, prompt lookup", {"source": "prompt_lookup", "gamma": 4})]


def _batch_one(wl, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """The batch-1 goals through the inference harness: speculative decoding with each draft
    source smollm2 has (no separate draft model ships for it) and the int8 KV cache, each against
    the baseline measured here."""
    from optimizers import registry
    from optimizers.measure import measure

    t0 = time.perf_counter()
    base = measure(wl, memory=False)
    out = {"baseline": base.metrics}
    log(f"batch-1 baseline: {time.perf_counter() - t0:.0f} s")
    steps = [(label, "speculative_decoding", params) for label, params in SPEC]
    steps += [("int8 KV cache", "kv_cache_quantization", {"bits": 8}),
              ("int4 KV cache", "kv_cache_quantization", {"bits": 4})]
    for label, name, params in steps:
        t0 = time.perf_counter()
        tech = registry.get(name)
        rec = tech.apply(wl, tech.config(params))
        out[label] = measure(rec.workload, reference=base, memory=False, runtime=rec.settings).metrics
        log(f"{label}: {time.perf_counter() - t0:.0f} s")
    return out


def goals(r: dict[str, dict[str, float]], one: dict[str, dict[str, float]]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met)."""
    spec = {label: one[label] for label, _ in SPEC}
    best = max(spec, key=lambda k: spec[k]["spec_speedup"])
    sp, kv, b1 = spec[best], one["int8 KV cache"], one["baseline"]
    within = abs(sp["spec_speedup"] / sp["spec_speedup_analytical"] - 1)
    kv_bytes = kv["kv_cache_bytes_vs_16bit"]
    kv_ppl = kv["perplexity"] / b1["perplexity"] - 1
    base, cb = r["one at a time (lean loop)"], r["continuous batching + paged KV (16-token pages)"]
    no_pc, pc = r[f"continuous batching, {PREFIX}-token shared prefix"], r["… + prefix caching"]
    speed = cb["throughput_tokens_per_s"] / base["throughput_tokens_per_s"]
    ttft = no_pc["ttft_ms_p50"] / pc["ttft_ms_p50"]
    return [
        (f"continuous batching + paged KV at {CONCURRENCY} concurrent: output tok/s ≥ 2× one at a time",
         f"×{speed:.2f} ({cb['throughput_tokens_per_s']:.1f} vs {base['throughput_tokens_per_s']:.1f} tok/s)",
         speed >= 2.0),
        ("… all outputs identical", f"{cb['output_exact_fraction']:.0%} of requests token-exact",
         cb["output_exact_fraction"] == 1.0),
        ("… KV used / reserved ≥ 90 %", f"{cb['kv_cache_used_fraction']:.1%} (at the peak of reserved pages)",
         cb["kv_cache_used_fraction"] >= 0.9),
        (f"prefix caching, {PREFIX}-token shared prefix: TTFT p50 ≥ 2× lower (vs the same engine without it)",
         f"×{ttft:.2f} lower ({no_pc['ttft_ms_p50']:.0f} → {pc['ttft_ms_p50']:.0f} ms); outputs "
         f"{pc['output_exact_fraction']:.0%} exact", ttft >= 2.0 and pc["output_exact_fraction"] == 1.0),
        ("speculative decoding (best draft) ≥ 1.5× decode tok/s at batch 1, identical output",
         f"×{sp['spec_speedup']:.2f} ({best}: α {sp['spec_acceptance_rate']:.2f}, "
         f"{sp['spec_mean_accepted_length']:.2f} tokens/round, c {sp['spec_cost_ratio']:.2f}); greedy match "
         f"{sp['greedy_match']:.0f}", sp["spec_speedup"] >= 1.5 and sp["greedy_match"] == 1.0),
        ("… within 20 % of the analytical speed-up from the measured α and c",
         f"×{sp['spec_speedup']:.2f} measured vs ×{sp['spec_speedup_analytical']:.2f} analytical ({within:.0%} apart)",
         within <= 0.2),
        ("int8 KV cache: KV bytes ≤ 0.55× (of a 16-bit cache) at perplexity ≤ +1 %",
         f"×{kv_bytes:.3f} of 16-bit (×{kv['kv_cache_bytes'] / b1['kv_cache_bytes']:.3f} of this fp32 baseline's), "
         f"perplexity {kv_ppl:+.2%}", kv_bytes <= 0.55 and kv_ppl <= 0.01),
    ]


def render(data: dict[str, Any], commit: str) -> str:
    r, env, sweep = data["results"], data["env"], data["sweep"]
    f = lambda v, d=0: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [
        "# Serving: the goal table (generated by `python -m benchmarks bench_serving`)", "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}",
        f"- machine: {env['cpu']}, ISA {env['cpu_isa']}, {env['threads']} threads; torch {env['torch']}, "
        f"transformers {env['transformers']}",
        f"- {WORKLOAD} in fp32; every row serves its seeded trace in this process, against the one-at-a-time "
        "row of the same trace (exactness is token for token against it); latency counts from each request's "
        "arrival, queueing included; outputs stop at their stated length, never at EOS.",
        f"- traces: load = {data['traces']['load']}", f"- shared = {data['traces']['shared']}",
        "", "## Goals", "", "| goal | measured | met |", "|---|---|---|",
    ]
    for goal, got, ok in goals(r, data["inference"]):
        lines.append(f"| {goal} | {got} | {'✅' if ok else ('❌' if ok is False else '—')} |")
    lines += ["", "## All rows", "",
              "| engine | trace | output tok/s | req/s | TTFT p50 / p95 ms | TPOT p50 / p95 ms | e2e p95 ms | "
              "KV used / reserved | exact | α / tokens per round |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, m in r.items():
        lines.append(f"| {label} | {m['trace']} | {m['throughput_tokens_per_s']:.1f} | {m['requests_per_s']:.2f} | "
                     f"{f(m['ttft_ms_p50'])} / {f(m['ttft_ms_p95'])} | {f(m.get('tpot_ms_p50'), 1)} / "
                     f"{f(m.get('tpot_ms_p95'), 1)} | {f(m['e2e_ms_p95'])} | "
                     f"{m['kv_cache_bytes_used'] / 1e6:.1f} / {m['kv_cache_bytes_reserved'] / 1e6:.1f} MB "
                     f"({m['kv_cache_used_fraction']:.0%}) | {m['output_exact_fraction']:.0%} | "
                     f"{f(m.get('spec_acceptance_rate'), 2)} / {f(m.get('spec_mean_accepted_length'), 2)} |")
    lines += ["", "## Continuous batching: throughput vs concurrency (load trace)", "",
              "| max concurrency | output tok/s | TTFT p50 ms | TPOT p50 ms | exact |", "|---|---|---|---|---|"]
    for c, m in sweep.items():
        lines.append(f"| {c} | {m['throughput_tokens_per_s']:.1f} | {f(m['ttft_ms_p50'])} | "
                     f"{f(m.get('tpot_ms_p50'), 1)} | {m['output_exact_fraction']:.0%} |")
    lines += ["", "## Batch 1 (inference harness, same process)", "",
              "| variant | decode tok/s | ×lean greedy | α | tokens/round | c | analytical | perplexity | KV bytes ×16-bit |",
              "|---|---|---|---|---|---|---|---|---|"]
    for label, m in data["inference"].items():
        lines.append(f"| {label} | {m['decode_tokens_per_s']:.1f} | {f(m.get('spec_speedup'), 2)} | "
                     f"{f(m.get('spec_acceptance_rate'), 2)} | {f(m.get('spec_mean_accepted_length'), 2)} | "
                     f"{f(m.get('spec_cost_ratio'), 3)} | {f(m.get('spec_speedup_analytical'), 2)} | "
                     f"{m['perplexity']:.3f} | {m['kv_cache_bytes_vs_16bit']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from benchmarks import write_goal_table

    write_goal_table(OUT, measure_all, render)


if __name__ == "__main__":
    main()
