"""How long each page takes to become usable with 1,000 stored runs (issue 16: "first load and every
page usable in ≤ 2 s"). Seeds 1,000 realistic runs (8 steps, ~20 figures per phase, mixed statuses,
workloads and gates verdicts) into a scratch SQLite database, starts the app as ``speedbook web``
does (``jobs.cli.streamlit_cmd``), and times each page in headless Chromium from the request until
its main content is visible and Streamlit is idle (no "Running…" status widget). Prints a table
against the goal, with the CPU, its ISA and the load. A measurement, never a test assertion.

    python scripts/measure_page_speed.py [--runs 1000] [--repeats 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PORT = 8766
GOAL_S = 2.0
IDLE_JS = "() => !document.querySelector('[data-testid=\"stStatusWidget\"] [data-testid=\"stStatusWidgetRunningIcon\"]')"

WORKLOADS = {  # workload → (baseline stored bytes, quality metric, its baseline value)
    "tiny-llama": (1_597_440, "perplexity", 520.0), "ref-lm": (25_165_824, "perplexity", 9.8),
    "smollm2-135m": (538_000_000, "perplexity", 18.4), "minilm": (90_868_736, "pair_spearman", 0.83),
    "digits-cnn": (412_000, "accuracy", 0.97),
}
TECHNIQUES = ["int8_dynamic", "int8_weight_only", "int4_weight_only", "gptq", "awq", "smoothquant", "nf4", "wanda",
              "magnitude_pruning", "nm_sparsity", "svd_factorization", "torch_compile", "sdpa", "kv_cache_quantization"]
STATUSES = ["succeeded"] * 80 + ["failed"] * 12 + ["cancelled"] * 5 + ["timed_out"] * 3  # per 100 runs


def figures(rng: random.Random, workload: str, shrink: float, slow: float) -> dict[str, float]:
    """About 20 figures of one phase, as the inference scenario stores them."""
    stored, quality, q0 = WORKLOADS[workload]
    lat = 4.0 * (stored / 1.6e6) ** 0.5 * slow
    out = {
        "stored_bytes": stored * shrink, "stored_bytes_vs_16bit": 2 * shrink, "bits_per_param": 32 * shrink,
        "peak_memory_bytes": stored * (1.2 + shrink), "latency_ms": lat, "latency_spread_ms": lat * 0.08,
        "prefill_tokens_per_s": 9000 / slow, "decode_tokens_per_s": 140 / slow, "decode_tokens_per_s_plain": 138 / slow,
        "decode_bandwidth_gb_per_s": 3.1 / slow, "copy_gb_per_s": 11.0, "decode_bandwidth_fraction": 0.28 / slow,
        quality: q0 * (1 + (1 - shrink) * 0.02 * rng.random()), "kl_divergence": (1 - shrink) * 0.01,
        "top1_agreement": 1 - (1 - shrink) * 0.05, "output_rel_error": (1 - shrink) * 0.03, "sqnr_db": 20 + 20 * shrink,
    }
    for name, r in (("latency_ms", slow), ("decode_tokens_per_s", 1 / slow)):
        out |= {f"{name}_ci_ratio": r, f"{name}_ci_low": r * 0.95, f"{name}_ci_high": r * 1.05, f"{name}_ci_pairs": 8.0}
    return out


def seed(url: str, n: int, seed_: int = 0) -> list[int]:
    """``n`` runs of the default team (and a few of another), with saved playbooks and kernel rows."""
    from sqlalchemy import insert

    from db import queries
    from db.models import KernelBenchmark, Metric, Playbook, Run, StepResult
    from db.session import session_scope
    from optimizers.metrics import spec

    rng = random.Random(seed_)
    now = dt.datetime.utcnow()
    with session_scope(url) as s:
        other = queries.ensure_team(s, "other-team").id
        pids = [s.execute(insert(Playbook).values(team_id=1, name=f"saved-{i}", title=f"Saved playbook {i}", origin="guide",
                                                  yaml_text=f"name: saved-{i}\ntitle: Saved playbook {i}\nsteps:\n"
                                                            "  - technique: int8_dynamic\n")).inserted_primary_key[0]
                for i in range(12)]
        runs, steps, metrics = [], [], []
        for i in range(n):
            workload = rng.choice(list(WORKLOADS))
            techs = rng.sample(TECHNIQUES, 8)
            status = "queued" if i >= n - 2 else rng.choice(STATUSES)  # the newest two wait for a worker
            created = now - dt.timedelta(minutes=(n - i) * 7)
            done = 8 if status == "succeeded" else rng.randrange(0, 8) if status != "queued" else 0
            runs.append(dict(id=i + 1, team_id=other if i % 10 == 9 else 1, playbook_id=rng.choice(pids + [None] * 12),
                             playbook_name=f"playbook-{i % 17}", workload=workload, device="cpu", status=status,
                             playbook_snapshot={"name": f"playbook-{i % 17}", "title": f"Playbook {i % 17}",
                                                "steps": [{"technique": t, "params": {}} for t in techs]},
                             created_at=created, started_at=None if status == "queued" else created + dt.timedelta(seconds=5),
                             finished_at=None if status == "queued" else created + dt.timedelta(seconds=60 + 30 * done),
                             worker=None if status == "queued" else "cpu-worker@host",
                             error=None if status in ("succeeded", "queued") else f"step {done + 1} failed: ValueError: seeded",
                             gates_verdict=rng.choice(["passed", "missed", "not checked"]) if status == "succeeded" else None,
                             gates=[{"metric": "perplexity", "ok": True, "detail": "perplexity +1.2 % ≤ +2 %"}],
                             environment={"device": "cpu", "threads": 2, "torch": "2.x"}, baseline_dtype="fp32",
                             enqueue_count=1))
            phases = [("baseline", -1, 1.0, 1.0)] if status != "queued" else []
            shrink, slow = 1.0, 1.0
            for k, t in enumerate(techs):
                st_status = "succeeded" if k < done else ("failed" if k == done and status != "succeeded" and status != "queued"
                                                          else "pending")
                steps.append(dict(run_id=i + 1, index=k, technique=t, params={}, status=st_status,
                                  verdict={"status": "ok", "reason": ""}, notes=[], details={}))
                if st_status == "succeeded":
                    shrink, slow = shrink * rng.uniform(0.5, 1.0), slow * rng.uniform(0.6, 1.2)
                    phases.append(("step", k, shrink, slow))
            if status == "succeeded":
                phases.append(("final", -1, shrink, slow))
            for phase, k, sh, sl in phases:
                for name, value in figures(rng, workload, sh, sl).items():
                    metrics.append(dict(run_id=i + 1, phase=phase, step_index=k, name=name, value=value,
                                        unit=spec(name).unit, kind="measured", variant=""))
        s.execute(insert(Run), runs)
        s.execute(insert(StepResult), steps)
        for j in range(0, len(metrics), 20_000):
            s.execute(insert(Metric), metrics[j:j + 20_000])
        s.execute(insert(KernelBenchmark), [dict(team_id=1, kernel="rmsnorm", shape=f"m={64 * j},n=512", dtype="float32",
                                                 device="cpu", mode="interpreter", status="succeeded",
                                                 row={"params": {}, "max_abs_err": 1e-7, "ms": 3.2}) for j in range(1, 21)])
    print(f"seeded {n} runs, {len(steps)} steps, {len(metrics)} figures", file=sys.stderr)
    return [r["id"] for r in runs if r["team_id"] == 1 and r["status"] == "succeeded"]


def pages(run_a: int, run_b: int) -> list[tuple[str, str, str]]:
    """(page, path, what shows once its main content is there: a text, or ``css=`` a selector)."""
    return [("Home", "home", "Latest runs of your team"), ("Guide", "guide", "Step 1 of 4"),
            ("New run", "new-run", "Run this playbook"), ("Catalog", "catalog", "Evidence table (from the taxonomy)"),
            ("Kernel lab", "kernel-lab", "Results (measured)"), ("Dashboard", "dashboard", "Per-step deltas"),
            ("Runs", "runs", "css=[data-testid=stDataFrame]"), ("Run", f"run?run={run_a}", "Metrics against the baseline (measured)"),
            ("Compare", f"compare?runs={run_a},{run_b}", "Playbook differences"),
            ("Saved playbooks", "playbooks", "Saved playbook 11"), ("Search", "search", "Searchable parameters"),
            ("Evidence", "evidence", "css=[data-testid=stDataFrame]")]


def usable_after(page, url: str, marker: str) -> float:
    """Seconds from the request until ``marker`` is visible and the script run is over."""
    t0 = time.perf_counter()
    page.goto(url)
    shown = page.locator(marker) if marker.startswith("css=") else page.get_by_text(marker)
    shown.first.wait_for(state="visible", timeout=120_000)
    page.wait_for_function(IDLE_JS, timeout=120_000, polling=50)
    return time.perf_counter() - t0


def serve(data: Path):
    from jobs.cli import streamlit_cmd

    env = {**os.environ, "SPEEDBOOK_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(streamlit_cmd(PORT), cwd=ROOT, env=env, stdout=open(data / "web.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{PORT}/_stcore/health", timeout=1).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not come up; see " + str(data / "web.log"))


def cpu_line() -> str:
    import platform

    import torch

    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return (f"CPU: {model}, {os.cpu_count()} cores, ISA {torch.backends.cpu.get_cpu_capability()}; "
            f"load average {os.getloadavg()[0]:.2f} before")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="warm loads per page after the first")
    ap.add_argument("--keep", help="use (and keep) this data folder instead of a temporary one")
    args = ap.parse_args()
    data = Path(args.keep or tempfile.mkdtemp(prefix="speedbook-speed-"))
    data.mkdir(parents=True, exist_ok=True)
    os.environ["SPEEDBOOK_DATA"] = str(data)
    os.environ.pop("DATABASE_URL", None)
    from db.migrate import upgrade
    from db.session import database_url

    url = database_url()
    upgrade(url)
    done = seed(url, args.runs)
    header = cpu_line()
    from playwright.sync_api import sync_playwright

    proc = serve(data)
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            first = usable_after(page, f"http://127.0.0.1:{PORT}/", "Latest runs of your team")
            rows.append(("first load (Home, fresh server)", first, None))
            for name, path, marker in pages(done[-1], done[-2]):
                cold = usable_after(page, f"http://127.0.0.1:{PORT}/{path}", marker)
                warm = [usable_after(page, f"http://127.0.0.1:{PORT}/{path}", marker) for _ in range(args.repeats)]
                rows.append((name, cold, statistics.median(warm) if warm else None))
                print(f"{name}: {cold:.2f} s, then {', '.join(f'{w:.2f}' for w in warm)} s", file=sys.stderr)
            browser.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    print(f"{args.runs} runs (8 steps, ~20 figures per phase) in SQLite; {header}")
    print(f"{'page':34} {'first visit':>12} {'median of ' + str(args.repeats):>12}  goal    result")
    for name, cold, warm in rows:
        worst = max(cold, warm or 0)
        print(f"{name:34} {cold:>10.2f} s {(f'{warm:.2f} s' if warm is not None else '—'):>12}  ≤ {GOAL_S:.0f} s  "
              f"{'met' if worst <= GOAL_S else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
