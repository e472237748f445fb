import numpy as np
import pytest

from difflab.eval.metrics import (
    METRICS,
    gaussian_window,
    kid,
    precision_recall,
    psnr,
    ssim,
)
from difflab.registry import UnknownNameError


def _images(seed, n=3, size=24, lo=40, hi=180):
    rng = np.random.default_rng(seed)
    return rng.integers(lo, hi, size=(n, size, size, 3)).astype(np.uint8)


def test_psnr_of_uniform_offset_matches_closed_form():
    a = _images(0)
    b = a + 5  # every pixel off by 5: MSE = 25
    expected = 20 * np.log10(255 / 5)
    np.testing.assert_allclose(psnr(a, b), expected, rtol=1e-12)
    # The same images as floats in [0, 1] give the same PSNR.
    np.testing.assert_allclose(psnr(a / 255.0, b / 255.0), expected, rtol=1e-9)
    assert np.isinf(psnr(a, a)).all()


def test_float_images_above_one_need_a_data_range():
    a = _images(1).astype(np.float64)
    with pytest.raises(ValueError, match="data_range"):
        psnr(a, a + 1)
    assert np.isfinite(psnr(a, a + 1, data_range=255)).all()


def test_ssim_of_an_image_with_itself_is_one():
    a = _images(2)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-12)


def test_ssim_of_constant_shift_matches_luminance_term():
    # Constant images: every window has mean mu and zero variance, so SSIM is exactly the
    # luminance term (2 mu (mu + c) + C1) / (mu^2 + (mu + c)^2 + C1).
    mu, c, c1 = 100.0, 30.0, (0.01 * 255) ** 2
    a = np.full((1, 16, 16, 3), mu)
    expected = (2 * mu * (mu + c) + c1) / (mu**2 + (mu + c) ** 2 + c1)
    np.testing.assert_allclose(ssim(a, a + c, data_range=255), expected, rtol=1e-12)


def test_ssim_of_shifted_texture_is_mean_of_local_luminance_terms():
    # A shift keeps every local variance and covariance, so the contrast-structure term is 1
    # and SSIM is the mean luminance term over windows, computed here by brute force.
    a = _images(3, n=1, size=16).astype(np.float64)
    c, c1 = 30.0, (0.01 * 255) ** 2
    w = np.outer(gaussian_window(), gaussian_window())  # (11, 11)
    windows = np.lib.stride_tricks.sliding_window_view(a[0], (11, 11), axis=(0, 1))
    mu = (windows * w).sum(axis=(-2, -1))  # (6, 6, 3) local means
    expected = ((2 * mu * (mu + c) + c1) / (mu**2 + (mu + c) ** 2 + c1)).mean()
    np.testing.assert_allclose(ssim(a, a + c, data_range=255), expected, rtol=1e-9)


def test_ssim_is_symmetric_and_falls_with_noise():
    a = _images(4)
    rng = np.random.default_rng(5)
    noisy = [np.clip(a + rng.normal(0, s, a.shape), 0, 255) for s in (5, 20, 60)]
    np.testing.assert_allclose(ssim(a, noisy[1], 255), ssim(noisy[1], a, 255), rtol=1e-12)
    means = [ssim(a, n, 255).mean() for n in noisy]
    assert means[0] > means[1] > means[2]


def test_ssim_rejects_images_smaller_than_the_window():
    a = _images(6, size=8)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim(a, a)


def _gauss(seed, n=200, d=16, shift=0.0):
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, d))


def test_kid_of_a_set_with_itself_is_near_zero_and_grows_with_shift():
    # Subsets of one set overlap, which biases the unbiased estimator slightly negative
    # (by about 2 (k(x, x) - k(x, y)) / n); two independent draws of one law are unbiased.
    x = _gauss(0, n=1000)
    kw = dict(n_subsets=10, subset_size=500)
    same, _ = kid(x, x, **kw)
    twin, twin_std = kid(x, _gauss(1, n=1000), **kw)
    small, _ = kid(x, _gauss(1, n=1000, shift=0.3), **kw)
    large, _ = kid(x, _gauss(1, n=1000, shift=1.0), **kw)
    assert abs(same) < 0.1 * small
    assert abs(twin) < 3 * twin_std < small
    assert small < large


def test_kid_is_deterministic_given_its_seed():
    x, y = _gauss(0), _gauss(1, shift=0.5)
    assert kid(x, y, n_subsets=5, subset_size=50, seed=3) == kid(
        x, y, n_subsets=5, subset_size=50, seed=3
    )


def test_precision_recall_of_a_set_with_itself_is_one():
    x = _gauss(0)
    assert precision_recall(x, x) == (1.0, 1.0)


def test_precision_recall_degrade_for_shifted_sets():
    real = _gauss(0)
    p1, r1 = precision_recall(real, _gauss(1, shift=0.5))
    p2, r2 = precision_recall(real, _gauss(1, shift=3.0))
    assert p2 < p1 < 1.0 and r2 < r1 < 1.0


def test_mode_collapse_keeps_precision_but_loses_recall():
    # Real: two far-apart clusters; fake: real points of one cluster only.
    real = np.concatenate([_gauss(0, n=100, d=4), _gauss(1, n=100, d=4, shift=20.0)])
    precision, recall = precision_recall(real, real[:100])
    assert precision == 1.0
    assert recall == pytest.approx(0.5)


def test_feature_metrics_check_shapes():
    with pytest.raises(ValueError, match="feature arrays"):
        kid(_gauss(0, d=4), _gauss(1, d=5))
    with pytest.raises(ValueError, match="more than 3 samples"):
        precision_recall(_gauss(0, n=3), _gauss(1, n=3))


def test_registry_names_metrics_and_lists_valid_ones():
    assert {"psnr", "ssim", "kid", "precision_recall", "fd", "accuracy"} <= set(METRICS)
    with pytest.raises(UnknownNameError, match="valid: accuracy"):
        METRICS.get("fid")
    a = _images(7)
    out = METRICS.get("psnr").fn(a, a + 5)
    assert out["psnr"] == pytest.approx(20 * np.log10(255 / 5))
    assert METRICS.get("accuracy").produces("accuracy/spatial")
    assert not METRICS.get("kid").produces("accuracy")


def test_fd_metric_uses_the_feature_module():
    x = _gauss(0, d=8)
    assert METRICS.get("fd").fn(x, x)["fd"] == pytest.approx(0.0, abs=1e-6)
    assert METRICS.get("fd").fn(x, _gauss(1, d=8, shift=1.0))["fd"] > 1.0
