"""Noise-aware speed figures: the baseline and the candidate timed as interleaved repeats in the
same process (A B B A A B …: each pair adjacent in time, the order alternating so a drift of the
machine's speed hits both alike), the ratio reported with a bootstrap confidence interval over
the pairs, and a verdict — faster, slower or no significant change — that only claims what the
interval supports. Figures are rounded to the digits the interval resolves.

The statistic is the median over pairs of candidate/baseline (robust to the outlier repeats a
shared CPU produces); its interval is the percentile bootstrap of that median (Efron &
Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13), resampling the pairs."""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Callable, Literal

Verdict = Literal["faster", "slower", "no significant change"]
LEVEL = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class RatioInterval:
    """candidate / baseline of a timed quantity (ms: below 1 is faster), with its interval."""

    ratio: float
    low: float
    high: float
    pairs: int
    level: float = LEVEL

    @property
    def verdict(self) -> Verdict:
        """For a time (lower is better): the whole interval below 1 is faster, above 1 slower."""
        if self.high < 1.0:
            return "faster"
        if self.low > 1.0:
            return "slower"
        return "no significant change"

    def inverse(self) -> "RatioInterval":
        """The same interval for the reciprocal quantity (a rate such as tokens/s: above 1 is faster)."""
        return RatioInterval(1.0 / self.ratio, 1.0 / self.high, 1.0 / self.low, self.pairs, self.level)

    def text(self) -> str:
        """e.g. "×2.6 [2.4–2.8]", with the digits the interval resolves."""
        d = digits(self.low, self.high)
        return f"×{self.ratio:.{d}f} [{self.low:.{d}f}–{self.high:.{d}f}]"


def digits(low: float, high: float, most: int = 3, least: int = 1) -> int:
    """Decimals to print a ratio with an interval [low, high]: enough that the interval's width
    shows in the last digit (width 0.4 → 1 decimal, 0.04 → 2; a width starting with 1 gets one
    more, 0.1 → 2, as the Particle Data Group rounds), between ``least`` and ``most``."""
    width = abs(high - low)
    if width <= 0 or not math.isfinite(width):
        return most
    d = -math.floor(math.log10(width))
    if width * 10**d < 2:
        d += 1
    return max(least, min(most, d))


def bootstrap_median_interval(values: list[float], level: float = LEVEL, resamples: int = RESAMPLES,
                              seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the percentile bootstrap interval of the median of ``values``."""
    if len(values) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(values)}")
    if not 0.5 < level < 1.0:
        raise ValueError(f"level={level} must be in (0.5, 1)")
    rng = random.Random(seed)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1.0 - level) / 2
    lo = meds[int(math.floor(tail * (resamples - 1)))]
    hi = meds[int(math.ceil((1.0 - tail) * (resamples - 1)))]
    return statistics.median(values), lo, hi


def paired_ratio(baseline_ms: list[float], candidate_ms: list[float], level: float = LEVEL,
                 resamples: int = RESAMPLES, seed: int = 0) -> RatioInterval:
    """The ratio interval of candidate over baseline from paired repeats (the i-th of each timed
    next to each other)."""
    if len(baseline_ms) != len(candidate_ms):
        raise ValueError(f"paired repeats need equal counts, got {len(baseline_ms)} and {len(candidate_ms)}")
    if any(t <= 0 for t in baseline_ms + candidate_ms):
        raise ValueError("timings must be positive")
    ratio, lo, hi = bootstrap_median_interval([c / b for b, c in zip(baseline_ms, candidate_ms)], level, resamples, seed)
    return RatioInterval(ratio, lo, hi, len(baseline_ms), level)


def interleave(baseline: Callable[[], float], candidate: Callable[[], float], pairs: int,
               warmup: int = 1) -> tuple[list[float], list[float]]:
    """Time ``pairs`` of (baseline, candidate) calls, each call returning its own milliseconds,
    alternating the order within pairs (A B, B A, A B …); ``warmup`` untimed calls of each first."""
    if pairs < 2:
        raise ValueError(f"pairs={pairs}: an interval needs at least 2 pairs")
    for _ in range(warmup):
        baseline()
        candidate()
    base, cand = [], []
    for i in range(pairs):
        if i % 2 == 0:
            base.append(baseline())
            cand.append(candidate())
        else:
            cand.append(candidate())
            base.append(baseline())
    return base, cand


def figures(name: str, interval: RatioInterval) -> dict[str, float]:
    """The stored scalars of a timed metric's interval: ``{name}_ci_ratio``, ``_ci_low``, ``_ci_high``
    (candidate / baseline of that metric, interleaved) and ``_ci_pairs``."""
    return {f"{name}_ci_ratio": interval.ratio, f"{name}_ci_low": interval.low, f"{name}_ci_high": interval.high,
            f"{name}_ci_pairs": float(interval.pairs)}


def stored_interval(metrics: dict[str, float], name: str) -> RatioInterval | None:
    """The interval ``figures`` stored for ``name``, if any."""
    try:
        return RatioInterval(metrics[f"{name}_ci_ratio"], metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"],
                             int(metrics.get(f"{name}_ci_pairs", 0)))
    except KeyError:
        return None


INTERVAL_SUFFIXES = ("_ci_ratio", "_ci_low", "_ci_high", "_ci_pairs")


def is_interval_figure(name: str) -> bool:
    return name.endswith(INTERVAL_SUFFIXES)
