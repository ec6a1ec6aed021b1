"""The conditional toy density and the validation of context files (jflows.data)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jflows.data import (
    conditional_ring_log_prob,
    conditional_ring_mean,
    load_context,
    load_dataset,
    sample_conditional_toy,
)
from jflows.data.conditional_toy import conditional_ring_entropy, sample_conditional_given
from jflows.errors import DataError


def test_conditional_ring_samples_match_its_exact_density():
    x, c = sample_conditional_toy("conditional-ring", 20_000, seed=0)
    assert x.shape == (20_000, 2) and c.shape == (20_000, 1) and x.dtype == np.float32
    assert np.all(np.abs(c) <= 1.0)
    # the mean NLL of draws is the conditional entropy, within a few standard errors
    nll = -conditional_ring_log_prob(x, c)
    assert abs(nll.mean() - conditional_ring_entropy()) < 4 * nll.std() / math.sqrt(len(nll))
    # residuals from the conditional mean have mean zero
    resid = x - conditional_ring_mean(c)
    assert np.all(np.abs(resid.mean(0)) < 4 * resid.std(0) / math.sqrt(len(x)))


def test_conditional_ring_log_prob_integrates_to_one():
    grid = np.linspace(-3.0, 3.0, 601)
    gx, gy = np.meshgrid(grid, grid)
    points = np.stack([gx.ravel(), gy.ravel()], 1)
    for c in (-0.9, 0.0, 0.4):
        p = np.exp(conditional_ring_log_prob(points, np.full(len(points), c)))
        assert abs(p.sum() * (grid[1] - grid[0]) ** 2 - 1.0) < 1e-3


def test_given_context_moves_the_blob():
    a = sample_conditional_given("conditional-ring", np.full(4000, -0.9), seed=1).mean(0)
    b = sample_conditional_given("conditional-ring", np.full(4000, 0.9), seed=1).mean(0)
    np.testing.assert_allclose(a, conditional_ring_mean(np.array([-0.9]))[0], atol=0.05)
    np.testing.assert_allclose(b, conditional_ring_mean(np.array([0.9]))[0], atol=0.05)


def test_dataset_of_the_conditional_toy_has_split_contexts():
    ds = load_dataset("conditional-ring", n_train=300, n_test=50, seed=2)
    assert ds.context_shape == (1,)
    assert ds.train_context.shape == (300, 1) and ds.test_context.shape == (50, 1)
    assert load_dataset("moons", n_train=10, n_test=5).context_shape is None


def test_npy_context_is_split_with_the_data(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    c = x[:, :1] * 10.0
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "c.npy", c[:, 0])  # (N,) reads as (N, 1)
    ds = load_dataset(str(tmp_path / "x.npy"), context=str(tmp_path / "c.npy"), seed=3)
    np.testing.assert_array_equal(ds.train_context, ds.train[:, :1] * 10.0)
    np.testing.assert_array_equal(ds.test_context, ds.test[:, :1] * 10.0)


@pytest.mark.parametrize(
    ("context", "match"),
    [
        (np.zeros((7, 1), np.float32), r"has 7 rows but data .*x\.npy' has 6; give one context"),
        (np.array([0.0, 1.0, np.nan, 2.0, np.inf, 3.0]), r"non-finite values in 2 rows \(first "
         r"row 2\); drop those rows from both"),
        (np.arange(6), r"holds int64 values, .* must be floats; write it with np\.save"),
        (np.zeros((6, 1, 1)), r"has shape \(6, 1, 1\).*shape \(N,\) or \(N, k\)"),
    ],
)
def test_bad_context_files_are_refused_in_one_line(tmp_path, context, match):
    np.save(tmp_path / "x.npy", np.zeros((6, 2), np.float32))
    np.save(tmp_path / "c.npy", context)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(str(tmp_path / "x.npy"), context=str(tmp_path / "c.npy"))
    assert "c.npy" in str(info.value) and "\n" not in str(info.value)


def test_missing_context_file_and_context_with_builtin_data(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_context(tmp_path / "none.npy", 3, "x.npy")
    with pytest.raises(DataError, match="must be a .npy file"):
        load_context(tmp_path / "c.csv", 3, "x.npy")
    with pytest.raises(DataError, match=r"brings its own context"):
        load_dataset("conditional-ring", context=str(tmp_path / "c.npy"))
    with pytest.raises(DataError, match=r"needs --data to be a .npy file"):
        load_dataset("moons", context=str(tmp_path / "c.npy"))
