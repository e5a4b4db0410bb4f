"""Benchmarks (``make bench``): each prints ratios against a baseline measured in the same run,
with the device and versions. Tests never assert wall-clock times; these do the measuring."""


def write_goal_table(out, measure_all, render) -> None:
    """Measure, render the markdown goal table at this commit, write it to ``out`` and print it."""
    from benchmarks.bench_techniques import _commit

    text = render(measure_all(), _commit())
    out.write_text(text)
    print(text)
    print(f"wrote {out}")
