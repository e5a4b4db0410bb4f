"""Time the Evidence page on 1,000 stored runs (issue 18's goal: it renders in < 2 s).

Seeds a temporary SQLite database with realistic runs (8 steps of real catalog techniques, ~24
figures per measurement: bytes, speed with interleaved intervals, quality, KV cache), then times
the aggregation alone (db.evidence.evidence) and the page rendered by Streamlit's AppTest, cold
(first run of the process) and warm (a rerun, as each later visit), and prints them beside the goal
with the machine they ran on. Usage: ``python scripts/measure_evidence_page.py [--runs 1000]``."""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 2.0
TECHNIQUES = ("gptq", "awq", "int8_weight_only", "int4_weight_only", "int8_dynamic", "smoothquant", "magnitude_pruning",
              "wanda", "sparsegpt", "svd_factorization", "torch_compile", "kv_cache_quantization", "half_precision",
              "speculative_decoding", "structured_pruning", "knowledge_distillation")
WORKLOADS = ("tiny-llama", "ref-lm", "minilm", "digits-cnn")


def _figures(rng: random.Random, state: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """One measurement's ~24 figures, the timed ones with their interval against the baseline."""
    out = dict(state)
    for name in ("latency_ms", "decode_tokens_per_s"):
        ratio = out[name] / baseline[name]
        out |= {f"{name}_ci_ratio": ratio, f"{name}_ci_low": ratio * 0.95, f"{name}_ci_high": ratio * 1.05,
                f"{name}_ci_pairs": 8.0}
    return out


def _step(rng: random.Random, state: dict[str, float]) -> dict[str, float]:
    shrink, speed = rng.choice((1.0, 1.0, 0.5, 0.3)), rng.uniform(0.6, 1.6)
    s = dict(state)
    s["stored_bytes"] *= shrink
    s["bits_per_param"] *= shrink
    s["stored_bytes_vs_16bit"] *= shrink
    s["peak_memory_bytes"] *= (1 + shrink) / 2
    s["latency_ms"] /= speed
    s["decode_tokens_per_s"] *= speed
    s["prefill_tokens_per_s"] *= speed
    s["perplexity"] *= rng.uniform(1.0, 1.05)
    s["kl_divergence"] += rng.uniform(0, 0.01)
    s["top1_agreement"] = rng.uniform(0.9, 1.0)
    s["output_rel_error"] = rng.uniform(0.0, 0.2)
    return s


def seed(url: str, n_runs: int, steps: int = 8, seed_: int = 0) -> int:
    """``n_runs`` succeeded runs with baseline, ``steps`` measured steps and final figures; returns the metric rows."""
    from sqlalchemy import insert

    from db.models import Metric, Run, StepResult, utcnow
    from db.session import session_scope

    rng = random.Random(seed_)
    rows: list[dict] = []
    with session_scope(url) as s:
        for i in range(n_runs):
            techs = rng.sample(TECHNIQUES, steps)
            device = "cuda" if i % 10 == 0 else "cpu"
            env = {"device": device, "torch": "2.13.0", "transformers": "5.24.0", "python": "3.11.7", "threads": 8,
                   "cpu": "AMD EPYC 9654", "cpu_isa": "AVX512 (avx2 avx512f avx512_vnni avx512_bf16)", "host": f"w{i % 4}",
                   "scenario": "inference", **({"gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0"} if device == "cuda" else {})}
            run = Run(team_id=1, playbook_name=f"pb-{i % 30}", workload=WORKLOADS[i % len(WORKLOADS)], device=device,
                      status="succeeded", environment=env, created_at=utcnow(), gates_verdict="passed",
                      playbook_snapshot={"name": f"pb-{i % 30}", "title": "t",
                                         "steps": [{"technique": t, "params": {}} for t in techs]})
            run.steps = [StepResult(index=k, technique=t, params={}, status="succeeded") for k, t in enumerate(techs)]
            s.add(run)
            s.flush()
            base = {"stored_bytes": 2.0e6, "bits_per_param": 32.0, "stored_bytes_vs_16bit": 2.0, "peak_memory_bytes": 2.8e6,
                    "latency_ms": 3.4, "latency_spread_ms": 0.3, "prefill_tokens_per_s": 9300.0,
                    "decode_tokens_per_s": 545.0, "perplexity": 532.0, "kv_cache_bytes": 131072.0,
                    "kv_cache_bytes_vs_16bit": 2.0, "copy_gb_per_s": 42.8, "kl_divergence": 0.0, "top1_agreement": 1.0,
                    "output_rel_error": 0.0}
            phases = [("baseline", -1, base)]
            state = base
            for k in range(steps):
                state = _step(rng, state)
                phases.append(("step", k, _figures(rng, state, base)))
            phases.append(("final", -1, _figures(rng, state, base)))
            rows += [{"run_id": run.id, "phase": p, "step_index": k, "name": n, "value": v, "unit": "", "kind": "measured",
                      "variant": ""} for p, k, figs in phases for n, v in figs.items()]
        s.execute(insert(Metric), rows)
    return len(rows)


def _page_app():
    from streamlit.testing.v1 import AppTest

    script = ("import streamlit as st\n"
              f"st.navigation([st.Page({str(ROOT / 'pages' / 'evidence.py')!r}, url_path='evidence')]).run()\n")
    return AppTest.from_string(script, default_timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--url", help="an empty database to seed instead of a temporary SQLite file, e.g. a fresh "
                                  "PostgreSQL schema: postgresql+psycopg2://…/db?options=-csearch_path%%3Dbench")
    args = ap.parse_args()
    os.environ["SPEEDBOOK_DATA"] = tempfile.mkdtemp(prefix="speedbook-evidence-")
    if args.url:
        os.environ["DATABASE_URL"] = args.url  # the page reads it too
    else:
        os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    import torch

    from db import evidence
    from db.migrate import upgrade
    from db.session import database_url, session_scope

    url = database_url()
    upgrade(url)
    t0 = time.perf_counter()
    n_metrics = seed(url, args.runs)
    print(f"seeded {args.runs} runs × 8 steps, {n_metrics:,} metric rows in {time.perf_counter() - t0:.1f} s ({url})")

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        with session_scope(url) as s:
            found = evidence.evidence(s, team_id=1)
        times.append(time.perf_counter() - t0)
    groups = sum(len(ev.groups) for ev in found)
    print(f"aggregation alone: median {statistics.median(times):.3f} s over {args.repeats} (min {min(times):.3f}); "
          f"{len(found)} techniques, {groups} workload/device groups")

    at = _page_app()
    t0 = time.perf_counter()
    at.run()
    cold = time.perf_counter() - t0
    assert not at.exception, at.exception
    rows = len(at.dataframe[0].value)
    warm = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t0)
    assert not at.exception, at.exception
    page = statistics.median(warm)
    print(f"Evidence page (AppTest, {rows} table rows): cold {cold:.2f} s (first run: imports, migration check), "
          f"warm median {page:.3f} s over {args.repeats} reruns")
    print(f"goal: < {GOAL_S:.0f} s with {args.runs} runs → {'met' if page < GOAL_S else 'MISSED'} "
          f"(warm {page:.3f} s, cold {cold:.2f} s)")
    print(f"machine: CPU ISA {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores visible, "
          f"python {sys.version.split()[0]}, {url.split(':', 1)[0]}")


if __name__ == "__main__":
    main()
