"""`make bench` / `python -m benchmarks [names…]`: run the benchmark modules in order."""
from __future__ import annotations

import importlib
import sys
import time

ORDER = ["bench_workloads", "bench_quant", "bench_smollm2", "bench_serving", "bench_training", "bench_compression", "bench_oneshot", "bench_techniques", "bench_guide", "bench_dashboard", "bench_search"]


def main(argv: list[str]) -> int:
    names = argv or ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {ORDER}", file=sys.stderr)
        return 2
    for name in names:
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"benchmarks.{name}":
                continue  # not written yet in this checkout
            raise
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        mod.main()
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
