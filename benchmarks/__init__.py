"""Benchmarks (``make bench``): each prints ratios against a baseline measured in the same run,
with the device and versions. Tests never assert wall-clock times; these do the measuring."""
