"""Issue 18's search goals, generated.

1. **Two workers against one.** The library's ``int4-weight-only`` search — a 12-trial grid over
   GPTQ/RTN × int4 group size × act-order on ref-lm — run by ``speedbook tune`` through real
   Celery workers on the embedded broker (what ``make run`` uses): once with one worker, once
   with two. Every worker is pinned to one thread (``SPEEDBOOK_THREADS=1``), so a trial does
   the same work on both sides and the ratio is the dispatch's, not a thread count's. Wall time
   is the tune command's, from start to answer. Goal: two workers ≤ 0.6× one.
2. **TPE's sample efficiency.** The grid's measured trials replayed as a table (a tabular
   benchmark: the sampler sees exactly the scores a live search on this space would): trials
   until TPE proposes the grid's best gate-meeting configuration, seeds 0, 1, 2, with random
   search beside it. Goal: ≤ 60 % of the grid's trials on average.

Writes ``benchmarks/SEARCH.md``. ``python -m benchmarks bench_search`` (part of ``make bench``)."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "SEARCH.md"
PLAYBOOK, WORKLOAD = "int4-weight-only", "ref-lm"
MEASURE_ENV = {"SPEEDBOOK_THREADS": "1", "SPEEDBOOK_MIN_TIME_S": "0.5"}  # the same on both sides


def _env(data: Path) -> dict[str, str]:
    env = {**os.environ, "SPEEDBOOK_DATA": str(data), "CELERY_BROKER_URL": f"sqla+sqlite:///{data / 'broker.sqlite'}",
           "SPEEDBOOK_MAINTENANCE_S": "2", "PYTHONUNBUFFERED": "1", **MEASURE_ENV}
    env.pop("DATABASE_URL", None)
    return env


def _registered(data: Path, n: int) -> bool:
    import sqlalchemy as sa

    db = data / "speedbook.db"
    if not db.exists():
        return False
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT count(*) FROM workers")).scalar() >= n
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def tune_with(workers: int) -> tuple[float, dict[str, Any]]:
    """Wall seconds of `speedbook tune` with ``workers`` live workers, and its JSON answer."""
    data = Path(tempfile.mkdtemp(prefix=f"speedbook-search-{workers}w-"))
    env = _env(data)
    subprocess.run([sys.executable, "-m", "jobs.cli", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    procs = [subprocess.Popen([sys.executable, "-m", "jobs.cli", "worker", "--name", f"bench-{i}@host"], cwd=ROOT, env=env,
                              stdout=open(data / f"w{i}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
             for i in range(workers)]
    try:
        deadline = time.monotonic() + 180
        while not _registered(data, workers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not register; see {data}/w*.log")
            time.sleep(0.5)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "jobs.cli", "tune", PLAYBOOK, "--workload", WORKLOAD, "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    if out.returncode not in (0, 3):
        raise RuntimeError(f"tune exited {out.returncode}: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    return wall, json.loads(out.stdout)


def trials_to_best(strategy: str, seed: int, table: dict[tuple, float], best: tuple) -> int:
    """Trials a sampler needs to propose ``best``, fed the grid's measured scores."""
    from jobs import search
    from playbooks.schema import library

    pb = library()[PLAYBOOK]
    pb = pb.model_copy(update={"search": pb.search.model_copy(update={"strategy": strategy, "seed": seed})})
    hist: list[dict[str, Any]] = []
    for n in range(1, len(table) + 1):
        (config,) = search.propose(pb, hist, 1)
        key = search._key(config)
        if key == best:
            return n
        hist.append({"config": config, "status": "succeeded", "score": table[key]})
    raise AssertionError("the sampler never proposed the best configuration of a finite grid")


def main() -> None:
    import torch

    from jobs import search
    from optimizers.measure import environment

    env = environment("cpu")
    isa = torch.backends.cpu.get_cpu_capability()
    print(f"CPU: {env.get('cpu')} ({isa}), {os.cpu_count()} cores; workers pinned to 1 thread each", flush=True)
    walls, docs = {}, {}
    for n in (1, 2):
        walls[n], docs[n] = tune_with(n)
        print(f"{n} worker(s): {walls[n]:.0f} s for {len(docs[n]['trials'])} trials "
              f"({sum(t['status'] == 'succeeded' for t in docs[n]['trials'])} succeeded)", flush=True)
    ratio = walls[2] / walls[1]
    doc = docs[1]
    per_worker = {}
    for t in docs[2]["trials"]:
        per_worker[t["worker"]] = per_worker.get(t["worker"], 0) + 1
    table = {search._key(t["config"]): t["score"] for t in doc["trials"]}
    pick = doc["best"] or doc["closest_miss"]
    best = search._key(pick["config"])
    tpe = [trials_to_best("tpe", s, table, best) for s in (0, 1, 2)]
    rnd = [trials_to_best("random", s, table, best) for s in (0, 1, 2)]
    frac = sum(tpe) / 3 / len(table)
    rows = [
        ("12-trial grid, 2 workers vs 1 (wall time of `speedbook tune`)", f"×{ratio:.2f} ({walls[2]:.0f} s vs {walls[1]:.0f} s)",
         "≤ 0.6×", ratio <= 0.6),
        ("TPE: trials to the grid's best gate-meeting configuration (mean of seeds 0–2)",
         f"{sum(tpe) / 3:.1f} of {len(table)} = {frac:.0%} (seeds: {tpe}); random search: {sum(rnd) / 3:.1f} ({rnd})",
         "≤ 60 %", frac <= 0.6),
    ]
    lines = [f"# Search: two workers, and TPE on a small space (issue 18)", "",
             f"Generated by `python -m benchmarks bench_search` on {dt.date.today()}: {env.get('cpu')} "
             f"(`{isa}`), {os.cpu_count()} cores, torch {env.get('torch')}. Each worker pinned to 1 thread; "
             f"`SPEEDBOOK_MIN_TIME_S=0.5` for every trial on both sides. Embedded SQLite broker and database.", "",
             "| goal | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'✅' if ok else '❌'} |" for a, b, c, ok in rows]
    lines += ["", f"Two workers shared the trials {dict(sorted(per_worker.items()))}.", "",
              f"## The grid (one worker's run; objectives as ratios to each trial's own baseline)", "",
              "| trial | configuration | stored bytes × | perplexity × | gates | score |", "|---|---|---|---|---|---|"]
    for t in doc["trials"]:
        cfg = ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in t["config"].items())
        obj = t["objectives"] or [float("nan"), float("nan")]
        mark = " **(best)**" if search._key(t["config"]) == best else ""
        lines.append(f"| {t['trial']} | {cfg}{mark} | {abs(obj[0]):.3f} | {abs(obj[1]):.4f} | "
                     f"{'met' if t['meets_gates'] else 'missed'} | {t['score']:.6g} |")
    lines += ["", f"Answer: {'best' if doc['best'] else 'closest miss'} — trial {pick['trial']}, "
              + ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in pick["config"].items()) + ".",
              "The score ranks gate-meeting trials by stored bytes, then perplexity (`playbooks/search.py: score`)."]
    OUT.write_text("\n".join(lines) + "\n")
    for a, b, c, ok in rows:
        print(f"{a}: {b}  goal {c} → {'met' if ok else 'MISSED'}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
