"""Baseline figures of the reference workloads on this machine, measured by the one
protocol every run uses (optimizers.measure). Later tables divide by these."""
from __future__ import annotations

import time

WORKLOADS = ("ref-lm", "ref-lm-draft", "minilm", "digits-cnn")
COLUMNS = ("stored_bytes", "peak_memory_bytes", "latency_ms", "latency_spread_ms", "prefill_tokens_per_s",
           "decode_tokens_per_s", "perplexity", "accuracy", "pair_spearman")


def main() -> None:
    from optimizers.measure import environment, measure
    from optimizers.workloads import load_workload

    env = environment("cpu")
    print(f"device cpu: {env['cpu']}, {env['threads']} threads, torch {env['torch']}, transformers {env['transformers']}")
    print(f"{'workload':<14}" + "".join(f"{c[:18]:>20}" for c in COLUMNS) + f"{'measure s':>11}")
    for name in WORKLOADS:
        wl = load_workload(name, "cpu")
        t0 = time.perf_counter()
        m = measure(wl).metrics
        cells = "".join(f"{m[c]:>20.5g}" if c in m else f"{'—':>20}" for c in COLUMNS)
        print(f"{name:<14}{cells}{time.perf_counter() - t0:>11.1f}", flush=True)
    print("all figures measured (median after warm-up); bytes in B, latency in ms, throughput in tok/s")


if __name__ == "__main__":
    main()
