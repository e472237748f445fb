"""Error bars: Wilson intervals for accuracies, the exact McNemar test for two methods scored on
the same prompts and seeds, and order-statistic intervals for medians of paired time ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion k / n ("Probable Inference, the Law of
    Succession, and Statistical Inference", Wilson, 1927); 95% by default."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # The bounds at k = 0 and k = n are exactly 0 and 1 (rounding would leave 1 - 1e-16).
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    return lo, 1.0 if k == n else min(1.0, centre + half)


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of two methods' pass/fail flags on the same items."""

    only_a: int  # items method A passes and B fails
    only_b: int  # items B passes and A fails
    n: int  # items compared
    p_value: float  # exact two-sided: binomial test of only_a against only_a + only_b, p = 1/2


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Exact McNemar test of two methods' per-item pass flags on the same prompts and seeds
    (McNemar, 1947): only the discordant items carry information."""
    fa, fb = np.asarray(a, bool), np.asarray(b, bool)
    if fa.shape != fb.shape or fa.ndim != 1:
        raise ValueError(f"need two flag vectors of one length, got {fa.shape} and {fb.shape}")
    only_a, only_b = int((fa & ~fb).sum()), int((fb & ~fa).sum())
    m = only_a + only_b
    if m == 0:
        return McNemar(0, 0, len(fa), 1.0)
    # Two-sided exact binomial p-value at p = 1/2: twice the smaller tail, capped at 1.
    tail = _scipy_stats.binom.cdf(min(only_a, only_b), m, 0.5)
    return McNemar(only_a, only_b, len(fa), float(min(1.0, 2 * tail)))


@dataclass(frozen=True)
class MedianInterval:
    """A median with a distribution-free interval from order statistics, and its coverage."""

    median: float
    lo: float
    hi: float
    coverage: float  # the interval's exact coverage for a continuous distribution


def median_interval(values: Sequence[float], level: float = 0.95) -> MedianInterval:
    """Median and order-statistic interval [x_(j), x_(n-j+1)] with the largest j whose coverage
    1 - 2 P(Binomial(n, 1/2) < j) is at least `level`; with fewer than 6 values no j reaches
    95%, and the interval is [min, max] with its exact (lower) coverage."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n < 1:
        raise ValueError("median_interval needs at least one value")
    j, coverage = 1, 1 - 2 * 0.5**n  # j = 1: [min, max]
    while j + 1 <= (n + 1) // 2:
        c = 1 - 2 * float(_scipy_stats.binom.cdf(j, n, 0.5))  # coverage of [x_(j+1), x_(n-j)]
        if c < level:
            break
        j, coverage = j + 1, c
    return MedianInterval(float(np.median(x)), float(x[j - 1]), float(x[n - j]), coverage)


def iqr(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (linear interpolation, numpy's default)."""
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q1), float(q3)


def speedup_interval(times: Sequence[float], baseline: Sequence[float]) -> MedianInterval:
    """Speed-up over the baseline from paired rounds: the median of the per-round ratios
    baseline / method, with its order-statistic interval (rounds interleave the two)."""
    t, b = np.asarray(times, np.float64), np.asarray(baseline, np.float64)
    if t.shape != b.shape or t.ndim != 1 or len(t) == 0:
        raise ValueError(f"need paired times of one length, got {t.shape} and {b.shape}")
    return median_interval(b / t)


def speedup_verdict(interval: MedianInterval) -> str:
    """'faster', 'slower' or 'no difference' (the interval straddles 1)."""
    if interval.lo > 1.0:
        return "faster"
    if interval.hi < 1.0:
        return "slower"
    return "no difference"


def format_accuracy(k: int, n: int) -> str:
    """'91.7% [86.5, 95.0]': the accuracy with its 95% Wilson interval, in percent."""
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def format_speedup(interval: MedianInterval) -> str:
    """'1.51x [1.47, 1.55]', or 'no difference (0.97-1.04x)' when the interval straddles 1."""
    if speedup_verdict(interval) == "no difference":
        return f"no difference ({interval.lo:.2f}-{interval.hi:.2f}x)"
    return f"{interval.median:.2f}x [{interval.lo:.2f}, {interval.hi:.2f}]"


def format_p(p: float) -> str:
    """A p-value to two significant digits ('<0.001' below that)."""
    return "<0.001" if p < 0.001 else f"{p:.2g}"
