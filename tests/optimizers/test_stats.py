"""Noise-aware figures on synthetic timings with known noise: the interval covers the true ratio
about as often as its level says, verdicts follow the interval, a real 2× difference is found in
few pairs and no difference is not called one, interleaving alternates the order, digits follow
the interval's width; and the measurement harness stores intervals against a baseline."""
import math
import random

import pytest

from optimizers import stats


def _timings(ratio: float, pairs: int, sigma: float, seed: int, drift: float = 0.0):
    """Baseline ~ 10 ms × lognormal noise, candidate = ratio × its own noise; a shared slow drift."""
    rng = random.Random(seed)
    base, cand = [], []
    for i in range(pairs):
        d = 1.0 + drift * i / pairs
        base.append(10.0 * d * math.exp(rng.gauss(0, sigma)))
        cand.append(10.0 * ratio * d * math.exp(rng.gauss(0, sigma)))
    return base, cand


def test_interval_covers_the_true_ratio_about_as_often_as_its_level():
    covered = 0
    for seed in range(200):
        iv = stats.paired_ratio(*_timings(0.7, 15, 0.1, seed), resamples=500, seed=seed)
        covered += iv.low <= 0.7 <= iv.high
    assert 0.88 <= covered / 200 <= 1.0  # percentile bootstrap of a median of 15: a little under or over 95 %


def test_verdicts_follow_the_interval():
    assert stats.paired_ratio(*_timings(0.5, 9, 0.1, 1)).verdict == "faster"
    assert stats.paired_ratio(*_timings(2.0, 9, 0.1, 2)).verdict == "slower"
    same = [stats.paired_ratio(*_timings(1.0, 9, 0.1, s), resamples=500).verdict for s in range(100)]
    assert same.count("no significant change") >= 85  # no difference is rarely called one
    noisy = stats.paired_ratio(*_timings(0.9, 5, 0.5, 3))  # a 10 % gain under 50 % noise: not claimed
    assert noisy.verdict == "no significant change" and noisy.low < 0.9 < noisy.high


def test_pairing_cancels_a_drift_that_hits_both():
    iv = stats.paired_ratio(*_timings(0.8, 12, 0.02, 4, drift=1.5))  # the machine slows 2.5× over the run
    assert iv.low <= 0.8 <= iv.high and iv.high - iv.low < 0.05


def test_inverse_is_the_rate_interval():
    iv = stats.RatioInterval(0.5, 0.4, 0.625, 7)
    inv = iv.inverse()
    assert (inv.ratio, inv.low, inv.high) == pytest.approx((2.0, 1.6, 2.5))
    assert iv.verdict == "faster"


def test_digits_follow_the_width():
    assert stats.digits(2.4, 2.8) == 1 and stats.digits(2.41, 2.45) == 2 and stats.digits(1.001, 1.004) == 3
    assert stats.digits(0.6, 1.8) == 1  # at least one decimal
    assert stats.RatioInterval(2.634, 2.41, 2.82, 7).text() == "×2.6 [2.4–2.8]"


def test_interleave_alternates_the_order():
    calls = []
    a = lambda: calls.append("A") or 1.0  # noqa: E731
    b = lambda: calls.append("B") or 2.0  # noqa: E731
    base, cand = stats.interleave(a, b, 4, warmup=1)
    assert calls == ["A", "B", "A", "B", "B", "A", "A", "B", "B", "A"]
    assert base == [1.0] * 4 and cand == [2.0] * 4


def test_bad_input():
    with pytest.raises(ValueError, match="equal counts"):
        stats.paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired_ratio([1.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        stats.paired_ratio([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="pairs"):
        stats.interleave(lambda: 1.0, lambda: 1.0, 1)


def test_measure_stores_intervals_against_the_baseline(monkeypatch):
    from optimizers.measure import measure
    from optimizers.workloads import load_workload

    monkeypatch.setattr("optimizers.measure.SAMPLE_MS", 1.0)
    wl = load_workload("tiny-llama")
    base = measure(wl, memory=False)
    assert set(base.timers) == {"latency_ms", "decode_ms"} and not any("_ci_" in k for k in base.metrics)
    again = measure(wl, base, memory=False)
    for name in ("latency_ms", "decode_tokens_per_s"):
        iv = stats.stored_interval(again.metrics, name)
        assert iv is not None and iv.low <= iv.ratio <= iv.high and iv.pairs >= 2
