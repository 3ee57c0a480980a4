"""Fréchet distance and feature statistics against closed forms and scipy (docs/reference.md#frechet-distance)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from sfv_fvd.stats import FeatureStats, frechet_distance, fvd_from_stats


def _random_cov(rng, d, n=None, scale=1.0):
    """Well-conditioned SPD matrix: sample covariance of n >> d draws (plus a small ridge)."""
    n = n or 4 * d
    a = rng.normal(size=(n, d)) * scale
    return a.T @ a / n + 0.1 * scale**2 * np.eye(d)


def _scipy_fd(mu1, s1, mu2, s2):
    """The StyleGAN-V / cd-fvd form: scipy.linalg.sqrtm of S1 S2, real part."""
    out = scipy.linalg.sqrtm(s1 @ s2)
    covmean = out[0] if isinstance(out, tuple) else out
    return float(np.real(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)))


def test_identical_stats_give_zero():
    rng = np.random.default_rng(0)
    s = _random_cov(rng, 64)
    mu = rng.normal(size=64)
    fd = frechet_distance(mu, s, mu, s)
    assert abs(fd) <= 1e-10 * np.trace(s)


@pytest.mark.parametrize("c", [0.0, 0.3, 1.7])
def test_scaled_covariance_closed_form(c):
    rng = np.random.default_rng(1)
    d = 50
    s1 = _random_cov(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = (1 - c) ** 2 * np.trace(s1) + np.sum((mu1 - mu2) ** 2)
    fd = frechet_distance(mu1, s1, mu2, c**2 * s1)
    assert fd == pytest.approx(expected, rel=1e-10, abs=1e-10 * np.trace(s1))


def test_diagonal_covariances_closed_form():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(1e-6, 5.0, size=400), rng.uniform(1e-6, 5.0, size=400)
    mu1, mu2 = rng.normal(size=400), rng.normal(size=400)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    fd = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert fd == pytest.approx(expected, rel=1e-10)


def test_tiny_variances_stay_exact():
    """Feature variances ~1e-8: an absolute-eps SVD form is far off here; the eigen form is exact."""
    a, b = np.full(400, 1e-8), np.full(400, 4e-8)
    fd = frechet_distance(np.zeros(400), np.diag(a), np.zeros(400), np.diag(b))
    assert fd == pytest.approx(400 * (1e-4 - 2e-4) ** 2, rel=1e-8)


def test_singular_covariance_is_handled():
    """Rank-deficient covariances (N < D, the usual case) give a finite, real, non-negative value."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 100)), rng.normal(size=(20, 100)) + 0.5
    sx, sy = np.cov(x.T, bias=True), np.cov(y.T, bias=True)
    fd = frechet_distance(x.mean(0), sx, y.mean(0), sy)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance(x.mean(0), sx, x.mean(0), sx) == pytest.approx(0, abs=1e-9 * np.trace(sx))


@pytest.mark.parametrize("d", [16, 400])
def test_agrees_with_scipy_sqrtm(d):
    rng = np.random.default_rng(4 + d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d, scale=1.5)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) * 0.1
    ours, ref = frechet_distance(mu1, s1, mu2, s2), _scipy_fd(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


def test_biased_unbiased_relation():
    rng = np.random.default_rng(5)
    n, d = 60, 12
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.3 + 0.2
    sx, sy = FeatureStats(d).append(x), FeatureStats(d).append(y)
    biased = fvd_from_stats(sx, sy, "biased")
    unbiased = fvd_from_stats(sx, sy, "unbiased")
    dmu2 = np.sum((x.mean(0) - y.mean(0)) ** 2)
    assert unbiased["fvd"] == pytest.approx(dmu2 + n / (n - 1) * (biased["fvd"] - dmu2), rel=1e-10)
    assert (biased["n_real"], biased["n_fake"], biased["covariance"]) == (n, n, "biased")
    assert unbiased["covariance"] == "unbiased"


def test_stats_match_numpy():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(33, 7)) * 3 + 10
    s = FeatureStats(7).append(x[:10]).append(x[10:])
    assert s.n == 33
    np.testing.assert_allclose(s.mean(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.cov(), np.cov(x.T, bias=True), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.cov(unbiased=True), np.cov(x.T), rtol=1e-9, atol=1e-12)


def test_merge_equals_concatenation():
    rng = np.random.default_rng(7)
    parts = [rng.normal(size=(k, 9)) for k in (5, 1, 17)]
    merged = FeatureStats(9)
    for p in parts:
        merged.merge(FeatureStats(9).append(p))
    whole = FeatureStats(9).append(np.concatenate(parts))
    assert merged.n == whole.n == 23
    np.testing.assert_allclose(merged.sum, whole.sum, rtol=1e-13)
    np.testing.assert_allclose(merged.sum_outer, whole.sum_outer, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.cov(), whole.cov(), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="dimension"):
        FeatureStats(9).merge(FeatureStats(8))


def test_tensor_roundtrip_and_sum_reduce():
    """to_tensor() parts summed (what all_reduce SUM does) == stats of all features."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(6, 5))
    ta, tb = FeatureStats(5).append(a).to_tensor(), FeatureStats(5).append(b).to_tensor()
    assert ta.dtype == torch.float64
    s = FeatureStats.from_tensor(ta + tb, 5)
    whole = FeatureStats(5).append(np.concatenate([a, b]))
    assert s.n == 10
    np.testing.assert_allclose(s.sum_outer, whole.sum_outer, rtol=1e-12, atol=1e-12)


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(9)
    s = FeatureStats(6).append(rng.normal(size=(11, 6)))
    s.save(tmp_path / "s.npz", metadata={"detector": "toy", "n": 11})
    t = FeatureStats.load(tmp_path / "s.npz")
    assert t.n == 11 and t.metadata == {"detector": "toy", "n": 11}
    np.testing.assert_array_equal(t.sum_outer, s.sum_outer)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_too_few_samples():
    s = FeatureStats(3).append(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        s.cov(unbiased=True)
