"""eval.stats against closed forms and textbook values."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from difflab.eval.stats import (
    Z95,
    format_accuracy,
    format_speedup,
    mcnemar_exact,
    median_interval,
    speedup_interval,
    speedup_verdict,
    wilson_interval,
)


def test_wilson_closed_forms():
    # k = 0: upper bound z^2 / (n + z^2); k = n: lower bound n / (n + z^2).
    for n in (1, 10, 84):
        assert wilson_interval(0, n) == (0.0, pytest.approx(Z95**2 / (n + Z95**2)))
        assert wilson_interval(n, n) == (pytest.approx(n / (n + Z95**2)), 1.0)
    # 5 / 10: the textbook interval [0.2366, 0.7634], symmetric about 1/2.
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-5) and hi == pytest.approx(0.76341, abs=1e-5)


def test_wilson_contains_estimate_and_narrows():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 500))
        k = int(rng.integers(0, n + 1))
        lo, hi = wilson_interval(k, n)
        assert lo <= k / n <= hi
        lo4, hi4 = wilson_interval(4 * k, 4 * n)
        assert hi4 - lo4 < hi - lo or k in (0, n)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_wilson_coverage_is_near_nominal():
    # Simulated coverage at p = 0.3, n = 60 stays within a couple of points of 95%.
    rng = np.random.default_rng(1)
    ks = rng.binomial(60, 0.3, size=4000)
    inside = [lo <= 0.3 <= hi for lo, hi in (wilson_interval(int(k), 60) for k in ks)]
    assert 0.93 <= np.mean(inside) <= 0.97


def test_mcnemar_exact_values():
    # 0 vs 5 discordant: p = 2 / 2^5; 1 vs 9: p = 2 (1 + 10) / 2^10; equal counts: p = 1.
    a = [True] * 5 + [True] * 10
    b = [False] * 5 + [True] * 10
    r = mcnemar_exact(a, b)
    assert (r.only_a, r.only_b, r.n) == (5, 0, 15)
    assert r.p_value == pytest.approx(2 / 32)
    a = [True] * 9 + [False] + [False] * 4
    b = [False] * 9 + [True] + [False] * 4
    assert mcnemar_exact(a, b).p_value == pytest.approx(22 / 1024)
    assert mcnemar_exact([True, False], [False, True]).p_value == 1.0
    assert mcnemar_exact([True, True], [True, True]).p_value == 1.0
    # Matches scipy's exact binomial test on the discordant pairs.
    rng = np.random.default_rng(2)
    for _ in range(20):
        a, b = rng.random(80) < 0.6, rng.random(80) < 0.4
        r = mcnemar_exact(a, b)
        ref = scipy_stats.binomtest(r.only_a, r.only_a + r.only_b, 0.5).pvalue
        assert r.p_value == pytest.approx(min(1.0, ref))


def test_median_interval_order_statistics():
    x = np.arange(1.0, 21.0)  # n = 20: the 95% interval is [x_(6), x_(15)], coverage 0.9586
    m = median_interval(x[::-1])
    assert (m.median, m.lo, m.hi) == (10.5, 6.0, 15.0)
    assert m.coverage == pytest.approx(1 - 2 * scipy_stats.binom.cdf(5, 20, 0.5))
    m5 = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])  # n = 5: [min, max] covers 1 - 2/32
    assert (m5.median, m5.lo, m5.hi, m5.coverage) == (3.0, 1.0, 5.0, 1 - 2 / 32)


def test_speedup_interval_and_verdict():
    base = [2.0, 2.2, 1.9, 2.1, 2.0]
    fast = [b / 1.5 for b in base]
    iv = speedup_interval(fast, base)
    assert iv.median == pytest.approx(1.5) and speedup_verdict(iv) == "faster"
    assert format_speedup(iv) == "1.50x [1.50, 1.50]"
    noisy = [b / r for b, r in zip(base, [0.95, 1.1, 1.02, 0.98, 1.05], strict=True)]
    iv = speedup_interval(noisy, base)
    assert speedup_verdict(iv) == "no difference"
    assert format_speedup(iv).startswith("no difference")
    assert speedup_verdict(speedup_interval([b * 2 for b in base], base)) == "slower"


def test_format_accuracy():
    lo, hi = wilson_interval(77, 84)
    assert format_accuracy(77, 84) == f"91.7% [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert math.isclose(77 / 84, 0.9166, abs_tol=1e-3)
