"""Decision-guide latency: median wall time of ``recommend()`` per example constraint file
(goal: < 100 ms, so the Guide page answers as the person types). The first call also loads
the catalog, library and spec tables; it is reported apart as "cold".

    .venv/bin/python benchmarks/bench_guide.py [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playbooks import guide  # noqa: E402
from playbooks.constraints import load_constraints  # noqa: E402

TARGET_MS = 100.0


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def bench(path: Path, repeats: int) -> dict[str, float | str]:
    c = load_constraints(path)
    times = [_ms(lambda: guide.recommend(c)) for _ in range(repeats)]
    first = guide.recommend(c)[0]
    return {"example": path.stem, "median_ms": statistics.median(times), "max_ms": max(times),
            "first": first.playbook, "n": len(guide.recommend(c))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    cold = _ms(lambda: guide.recommend(examples[0]))
    rows = [bench(p, args.repeats) for p in examples]
    print(f"device: cpu:{os.cpu_count()} ({platform.processor() or platform.machine()}), "
          f"python {platform.python_version()}, {args.repeats} repeats, cold first call {cold:.1f} ms")
    print(f"{'example':<26} {'median ms':>10} {'max ms':>8}  {'recs':>4}  first recommendation")
    for r in rows:
        print(f"{r['example']:<26} {r['median_ms']:>10.2f} {r['max_ms']:>8.2f}  {r['n']:>4}  {r['first']}")
    overall = statistics.median(r["median_ms"] for r in rows)
    verdict = "ok" if overall < TARGET_MS else "OVER TARGET"
    print(f"median over examples: {overall:.2f} ms (target < {TARGET_MS:.0f} ms: {verdict}, "
          f"{TARGET_MS / overall:.0f}× headroom)")


if __name__ == "__main__":
    main()
