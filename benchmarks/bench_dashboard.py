"""Dashboard with 1,000 runs: median render time of the Dashboard page (AppTest, the whole
script: SQL filter/sort/pivot + table + charts). Target < 2 s."""
from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def seed(n_runs: int = 1000) -> None:
    from db import queries
    from db.migrate import upgrade
    from db.session import session_scope

    upgrade()
    rng = random.Random(0)
    techs = ["int8_dynamic", "gptq", "awq", "smoothquant", "nf4"]
    with session_scope() as s:
        for i in range(n_runs):
            t = rng.choice(techs)
            snap = {"name": f"pb-{t}", "title": t, "steps": [{"technique": t, "params": {}}]}
            run = queries.create_run(s, playbook_name=f"pb-{t}", snapshot=snap, workload=rng.choice(["ref-lm", "minilm", "digits-cnn"]), device="cpu")
            run.status = rng.choice(["succeeded"] * 8 + ["failed"])
            base = {"latency_ms": 10.0, "stored_bytes": 8e6, "peak_memory_bytes": 9e6, "perplexity": 30.0}
            fin = {"latency_ms": 10.0 / rng.uniform(0.8, 2.5), "stored_bytes": 8e6 * rng.uniform(0.15, 0.5),
                   "peak_memory_bytes": 9e6 * rng.uniform(0.3, 0.8), "perplexity": 30.0 * rng.uniform(1.0, 1.1)}
            queries.write_metrics(s, run.id, "baseline", base)
            queries.write_metrics(s, run.id, "step", fin, step_index=0)
            queries.write_metrics(s, run.id, "final", fin)


def main(repeats: int = 7) -> None:
    os.environ["SPEEDBOOK_DATA"] = tempfile.mkdtemp(prefix="speedbook-bench-")
    os.environ.pop("DATABASE_URL", None)
    from streamlit.testing.v1 import AppTest

    seed()
    times = []
    for _ in range(repeats):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.switch_page("pages/dashboard.py")
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        assert not at.exception, at.exception
    med = statistics.median(times)
    print(f"dashboard render with 1,000 runs: median {med * 1e3:.0f} ms over {repeats} (min {min(times) * 1e3:.0f}, "
          f"max {max(times) * 1e3:.0f}); target < 2000 ms → {'met' if med < 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
