"""Toy 2-D densities: determinism, exact sizes, and distribution checks that a wrong recipe fails.

Every check uses a fixed seed, so it is deterministic; the tolerances are chosen so that a
correct recipe would pass for almost every seed (bounds of 4-5 standard errors).
"""

import math

import numpy as np
import pytest

from jflows.data import (
    EIGHT_GAUSSIANS_CENTERS,
    EIGHT_GAUSSIANS_STD,
    TOY_DENSITIES,
    eight_gaussians_log_prob,
    load_dataset,
    sample_toy,
)
from jflows.errors import DataError

N = 20_000


def _polar(x):
    x = np.asarray(x, np.float64)
    return np.hypot(x[:, 0], x[:, 1]), np.arctan2(x[:, 1], x[:, 0])


def _wrap(angle, period=2 * np.pi):
    """Angle residual mapped to [-period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


def _binomial_bound(p, n, sigmas=4.0):
    return sigmas * math.sqrt(p * (1 - p) / n)


def test_names():
    assert TOY_DENSITIES == (
        "moons",
        "8gaussians",
        "checkerboard",
        "pinwheel",
        "2spirals",
        "rings",
        "circles",
        "swissroll",
        "reflected-moons",
    )


def test_reflected_moons_is_symmetric_under_every_coordinate_flip():
    x = sample_toy("reflected-moons", 40000, seed=0)
    quadrant = (x[:, 0] > 0).astype(int) * 2 + (x[:, 1] > 0)
    counts = np.bincount(quadrant, minlength=4) / len(x)
    assert np.all(np.abs(counts - 0.25) < _binomial_bound(0.25, len(x)))
    a = np.abs(x[quadrant == 3])  # |x| has the same distribution in every quadrant
    for q in range(3):
        b = np.abs(x[quadrant == q])
        stderr = 2 * a.std(0).max() / math.sqrt(len(b))
        np.testing.assert_allclose(b.mean(0), a.mean(0), atol=4 * stderr)


@pytest.mark.parametrize("name", TOY_DENSITIES)
@pytest.mark.parametrize("n", [1, 7, 1001])
def test_shape_dtype_exact_n(name, n):
    x = sample_toy(name, n, seed=3)
    assert x.shape == (n, 2)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_deterministic_per_seed(name):
    a = sample_toy(name, 500, seed=11)
    b = sample_toy(name, 500, seed=11)
    c = sample_toy(name, 500, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_generator_seed_is_advanced(name):
    rng = np.random.default_rng(5)
    a, b = sample_toy(name, 100, rng), sample_toy(name, 100, rng)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, sample_toy(name, 100, np.random.default_rng(5)))


def test_unknown_name_lists_valid_names_without_fallback():
    with pytest.raises(DataError, match="'gaussians8'") as info:
        sample_toy("gaussians8", 10, 0)
    for name in TOY_DENSITIES:
        assert name in str(info.value)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_n(n):
    with pytest.raises(DataError, match="positive integer"):
        sample_toy("moons", n, 0)


def test_eight_gaussians_clusters():
    x = sample_toy("8gaussians", N, seed=0).astype(np.float64)
    dist = np.linalg.norm(x[:, None, :] - EIGHT_GAUSSIANS_CENTERS, axis=-1)
    nearest = dist.argmin(axis=1)
    # 6 std in 2-D: P(chi2_2 > 36) = exp(-18) ~ 2e-8 per point.
    assert dist.min(axis=1).max() < 6 * EIGHT_GAUSSIANS_STD
    freq = np.bincount(nearest, minlength=8) / N
    np.testing.assert_allclose(freq, 1 / 8, atol=_binomial_bound(1 / 8, N))
    resid = x - EIGHT_GAUSSIANS_CENTERS[nearest]
    for k in range(8):  # each cluster is centred on its centre
        r_k = resid[nearest == k]
        assert np.abs(r_k.mean(axis=0)).max() < 5 * EIGHT_GAUSSIANS_STD / math.sqrt(len(r_k))
    # Std of a sample std is about sigma / sqrt(2 n); 2 coordinates pooled.
    np.testing.assert_allclose(
        resid.std(), EIGHT_GAUSSIANS_STD, atol=5 * EIGHT_GAUSSIANS_STD / math.sqrt(4 * N)
    )
    np.testing.assert_allclose(
        np.linalg.norm(EIGHT_GAUSSIANS_CENTERS, axis=1), 4 / 1.414, rtol=1e-12
    )


def test_eight_gaussians_entropy():
    """The issue states the true NLL is 2.833 nats; MC standard error here is ~0.0022."""
    x = sample_toy("8gaussians", 200_000, seed=1)
    nll = -eight_gaussians_log_prob(x)
    assert abs(nll.mean() - 2.833) < 0.01
    assert nll.std() / math.sqrt(len(nll)) < 0.003


def test_eight_gaussians_log_prob_normalised_and_shaped():
    step = 0.02
    g = np.arange(-5.0, 5.0, step) + step / 2
    grid = np.stack(np.meshgrid(g, g), axis=-1)  # (500, 500, 2)
    logp = eight_gaussians_log_prob(grid)
    assert logp.shape == (len(g), len(g))
    assert abs(np.exp(logp).sum() * step**2 - 1.0) < 1e-3
    single = eight_gaussians_log_prob(EIGHT_GAUSSIANS_CENTERS[3])
    var = EIGHT_GAUSSIANS_STD**2
    assert single.shape == ()
    # At a centre the two neighbouring components add about 2 exp(-18.7) ~ 1.5e-8.
    np.testing.assert_allclose(single, -math.log(8 * 2 * math.pi * var), rtol=1e-7)
    with pytest.raises(DataError, match="last axis of size 2"):
        eight_gaussians_log_prob(np.zeros((4, 3)))


def test_checkerboard_support_and_cells():
    x = sample_toy("checkerboard", N, seed=0).astype(np.float64)
    assert (x >= -4).all()
    assert (x <= 4).all()
    # float32 rounding can put a point exactly on a cell edge; leave those few out.
    inner = x[np.abs(x - 2 * np.round(x / 2)).min(axis=1) > 1e-5]
    assert len(inner) > N - 10
    i, j = np.floor(inner[:, 0] / 2).astype(int), np.floor(inner[:, 1] / 2).astype(int)
    assert ((i + j) % 2 == 0).all(), "points outside the alternating squares"
    cells = np.bincount((i + 2) * 4 + (j + 2), minlength=16)
    occupied = cells[cells > 0] / len(inner)
    assert len(occupied) == 8
    np.testing.assert_allclose(occupied, 1 / 8, atol=_binomial_bound(1 / 8, N))


def test_rings_radii():
    x = sample_toy("rings", N, seed=0)
    r, _ = _polar(x)
    radii = np.array([3.0, 2.25, 1.5, 0.75])
    ring = np.abs(r[:, None] - radii).argmin(axis=1)
    # Recipe: N//4 on each outer circle, the remainder on the smallest. Rings are 0.75 apart
    # and the radial noise std is 0.08, so nearest-ring assignment is off for a handful of
    # points at most (a 4.7-sigma deviation).
    counts = np.bincount(ring, minlength=4)
    np.testing.assert_allclose(counts, [N // 4] * 3 + [N - 3 * (N // 4)], atol=3)
    resid = r - radii[ring]
    np.testing.assert_allclose(resid.std(), 0.08, atol=0.003)
    # Tangential noise pushes radii out by 0.08^2 / (2 R) on average, ~0.002 here.
    assert abs(resid.mean() - 0.002) < 0.003


def test_circles_radii():
    x = sample_toy("circles", N, seed=0)
    r, _ = _polar(x)
    outer = r > 2.25
    assert abs(outer.mean() - 0.5) < _binomial_bound(0.5, N)
    resid = np.where(outer, r - 3.0, r - 1.5)
    # sklearn's noise 0.08 is added before the x3 scaling.
    np.testing.assert_allclose(resid.std(), 0.24, atol=0.01)


def test_moons_moments():
    x = sample_toy("moons", N, seed=0).astype(np.float64)
    # make_moons places points deterministically (noise std 0.1) -> x2 + (-1, -0.2):
    # mean (0, 2 * (1/2 * 2/pi + 1/2 * (1/2 - 2/pi))) - (1, 0.2) = (0, 0.3).
    tol = 5 * 0.2 / math.sqrt(N) + 1e-3
    np.testing.assert_allclose(x.mean(axis=0), [0.0, 0.3], atol=tol)
    var_y = 0.5 - 4 / np.pi**2 + (4 / np.pi - 0.5) ** 2 / 4
    expected_std = np.sqrt(4 * np.array([0.75, var_y]) + 0.2**2)
    np.testing.assert_allclose(x.std(axis=0), expected_std, atol=0.02)
    # Noise level: the moons lie on circles of radius 2 about (-1, -0.2) and (1, 0.8); the
    # radial residual is ~N(0, 0.2^2), so median |residual| / 0.6745 estimates 0.2 (slightly
    # less, since a point near the crossing of the two circles takes the smaller residual).
    d_outer = np.abs(np.hypot(x[:, 0] + 1.0, x[:, 1] + 0.2) - 2.0)
    d_inner = np.abs(np.hypot(x[:, 0] - 1.0, x[:, 1] - 0.8) - 2.0)
    noise = np.median(np.minimum(d_outer, d_inner)) / 0.6745
    assert 0.17 < noise < 0.23  # noise=0.05 in make_moons would give ~0.09


def test_pinwheel_arms():
    x = sample_toy("pinwheel", N, seed=0).astype(np.float64) / 2
    r, phi = _polar(x)
    # Output = f rotated by -a, a = 2 pi c / 5 + 0.25 exp(f0), |f| ~ f0, so
    # phi + 0.25 exp(r) ~ -2 pi c / 5 up to atan(f1/f0) (std ~0.1).
    arm_angle = phi + 0.25 * np.exp(r)
    resid = _wrap(arm_angle, 2 * np.pi / 5)
    assert resid.std() < 0.16  # a wrongly signed rotation gives ~0.32
    arm = np.round(-(arm_angle - resid) / (2 * np.pi / 5)).astype(int) % 5
    np.testing.assert_allclose(np.bincount(arm) / N, 0.2, atol=_binomial_bound(0.2, N))
    assert abs(r.mean() - 1.0) < 0.02


def test_two_spirals_structure():
    x = sample_toy("2spirals", N, seed=0).astype(np.float64) * 3
    r, phi = _polar(x)
    # Spiral points (-cos t, sin t) t have angle pi - t, the mirrored ones -t: phi + r = 0 mod pi.
    far = r > 3
    resid = _wrap(phi + r, np.pi)
    assert np.mean(np.abs(resid[far]) < 0.75) > 0.8  # uniform angles would give ~0.48
    assert r.max() < 3 * np.pi + 2.0
    assert abs(np.mean(x[:, 0] > 0) - 0.5) < _binomial_bound(0.5, N)


def test_swissroll_structure():
    x = sample_toy("swissroll", N, seed=0).astype(np.float64) * 5
    r, phi = _polar(x)
    # (t cos t, t sin t) + N(0, I), t ~ U[1.5 pi, 4.5 pi]: E|.| ~ E t + E[1 / (2 t)].
    expected = 3 * np.pi + math.log(3) / (6 * np.pi)
    assert abs(r.mean() - expected) < 4 * r.std() / math.sqrt(N)
    # The polar angle follows t = radius (mod 2 pi); radial noise of std 1 blurs it.
    assert np.mean(np.abs(_wrap(phi - r)) < 0.6) > 0.35  # uniform would give 0.19


def test_load_dataset_toy_split():
    ds = load_dataset("pinwheel", n_train=300, n_test=40, seed=4)
    assert (ds.kind, ds.levels, ds.event_shape, ds.dims) == ("vector", None, (2,), 2)
    assert not ds.is_image
    np.testing.assert_array_equal(ds.train, sample_toy("pinwheel", 300, 4))
    assert ds.test.shape == (40, 2)
    assert not np.array_equal(ds.test, sample_toy("pinwheel", 40, 4))
    again = load_dataset("pinwheel", n_train=300, n_test=40, seed=4)
    np.testing.assert_array_equal(ds.test, again.test)


def test_load_dataset_toy_rejects_levels_and_bad_sizes():
    with pytest.raises(DataError, match="--levels"):
        load_dataset("moons", levels=256)
    with pytest.raises(DataError, match="n_test"):
        load_dataset("moons", n_test=0)
