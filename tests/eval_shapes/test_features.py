"""Fréchet distance, KID, degradations and the shipped shapes feature net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from difflab.data.shapes import load_suite, render_spec
from difflab.eval.features import (
    add_gaussian_noise,
    blockiness,
    color_shift,
    extract_features,
    frechet_distance,
    gaussian_blur,
    load_feature_net,
    to_uint8_images,
)


def _gaussian(n, d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * scale
    return rng.normal(size=(n, d)) @ mix + rng.normal(size=d)


def test_frechet_distance_matches_closed_forms():
    x = _gaussian(400, 6, 0)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    c = np.arange(6.0)
    assert frechet_distance(x, x + c) == pytest.approx((c**2).sum(), rel=1e-9)
    # In one dimension the distance is (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2.
    a, b = x[:, :1], 3 * x[:250, 1:2] + 2
    expect = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expect, rel=1e-9)


def test_frechet_distance_agrees_with_sqrtm_and_is_symmetric():
    a, b = _gaussian(300, 8, 1), _gaussian(200, 8, 2, scale=0.5)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-9)
    with pytest.raises(ValueError, match="feature dims"):
        frechet_distance(a, b[:, :4])
    with pytest.raises(ValueError, match="feats_a"):
        frechet_distance(a[:1], b)


def test_degradations_are_seeded_and_do_what_they_say():
    img, _ = render_spec(load_suite("binding")[0], 32, seed=0)
    x = img[None]
    assert np.array_equal(add_gaussian_noise(x, 0.1, seed=3), add_gaussian_noise(x, 0.1, seed=3))
    assert not np.array_equal(add_gaussian_noise(x, 0.1, seed=3), x)
    assert np.array_equal(gaussian_blur(x, 0.0), x)
    blurred = gaussian_blur(x, 1.0).astype(float)
    # Blur conserves the mean colour (up to rounding and the replicated border) and
    # lowers the total variation.
    assert abs(blurred.mean() - x.mean()) < 1.0
    assert np.abs(np.diff(blurred, axis=1)).sum() < np.abs(np.diff(x.astype(float), axis=1)).sum()
    tiles = blockiness(x, 4)[0].reshape(8, 4, 8, 4, 3)
    assert (tiles == tiles[:, :1, :, :1]).all()
    shifted = color_shift(x, 0.2, seed=1).astype(float) - x
    assert np.abs(shifted).max() > 0


def test_float_and_uint8_inputs_give_the_same_features():
    specs = load_suite("counting")[:8]
    images = np.stack([render_spec(s, 32, seed=s.seed)[0] for s in specs])
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert np.array_equal(to_uint8_images(as_float), images)
    f_uint8 = extract_features(images, batch_size=3)
    assert f_uint8.shape == (8, load_feature_net().feature_dim)
    np.testing.assert_allclose(extract_features(as_float), f_uint8, rtol=1e-5, atol=1e-5)
    assert load_feature_net() is load_feature_net()
    with pytest.raises(ValueError, match="uint8"):
        to_uint8_images(np.zeros((2, 32, 32), np.int64))
    with pytest.raises(FileNotFoundError, match="config"):
        load_feature_net("/nonexistent/folder")


def _renders(n: int, size: int, seed: int) -> np.ndarray:
    specs = load_suite("all")
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(specs), size=n)
    return np.stack([render_spec(specs[i], size, seed=seed * 100_000 + j)[0]
                     for j, i in enumerate(picks)])


@pytest.mark.parametrize("size", [32, 64])
def test_frechet_distance_sees_blur_noise_and_content(size):
    real_a, real_b = _renders(400, size, 1), _renders(400, size, 2)
    f_a, f_b = extract_features(real_a), extract_features(real_b)
    fd_real = frechet_distance(f_a, f_b)
    fd_blur = frechet_distance(f_a, extract_features(gaussian_blur(real_b, size / 32)))
    fd_noise = frechet_distance(f_a, extract_features(add_gaussian_noise(real_b, 0.1, seed=0)))
    assert fd_blur > 5 * fd_real and fd_noise > 5 * fd_real, (fd_real, fd_blur, fd_noise)
    # Content: only single objects against the whole suite's mix.
    singles = np.stack([render_spec(s, size, seed=k)[0] for s in load_suite("single")
                        for k in range(4)])
    fd_content = frechet_distance(f_a, extract_features(singles))
    assert fd_content > 3 * fd_real, (fd_real, fd_content)
