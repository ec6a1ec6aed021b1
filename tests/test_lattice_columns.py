"""Degenerate columns of vector data: detection, the lattice dequantization layer and its bound.

A continuous density on a constant or lattice column is unbounded; runs refuse constants, warn
about lattices, and with ``dequantization="uniform"`` model them as discrete values (a lower
bound on the mixed likelihood, checked here against its closed form).
"""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from jflows import models as jm
from jflows.bijectors import Estimate, LatticeDequantization
from jflows.data import (
    Discrete,
    Lattice,
    constant_columns,
    dequantized_stats,
    discrete_columns,
    off_lattice_rows,
)
from jflows.errors import ConfigError, DataError
from jflows.names import DEQUANT
from jflows.training.data_checks import lattice_layers, vector_settings, warn_unused_levels

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32


def _mixed(rows=400, seed=0):
    """A Gaussian column, a binary one, a 0.1-step column in float32 and a 0/1/2.5 code."""
    r = np.random.default_rng(seed)
    return np.stack([
        r.normal(size=rows), r.integers(0, 2, rows), np.round(r.uniform(0, 2, rows), 1),
        r.choice([0.0, 1.0, 2.5], rows),
    ], axis=1).astype(np.float32)


# --- detection -------------------------------------------------------------------------------

def test_discrete_columns_finds_lattices_and_irregular_codes():
    x = _mixed()
    assert constant_columns(x) == ()
    found = discrete_columns(x)
    assert found == (
        Lattice(column=1, offset=0.0, spacing=1.0, levels=2, distinct=2),
        Lattice(column=2, offset=0.0, spacing=0.1, levels=21, distinct=21),  # not 0.0999999
        Discrete(column=3, distinct=3),
    )


def test_detection_thresholds():
    assert constant_columns(np.array([[1.0, 2.0], [1.0, 3.0]])) == (0,)
    binary = np.array([[0.0], [1.0]] * 5)  # 5 rows per value: discrete
    assert discrete_columns(binary) == (Lattice(0, 0.0, 1.0, 2, 2),)
    assert discrete_columns(binary[:9]) == ()  # fewer than 5 rows per value
    assert discrete_columns(binary, min_repeats=4.5)[0].column == 0
    gaussian = np.random.default_rng(0).normal(size=(10_000, 1)).astype(np.float32)
    assert discrete_columns(gaussian) == ()
    # a lattice with gaps: 0, 3, 9 has step 3 and 4 lattice points, 3 of them seen
    assert discrete_columns(np.array([[0.0], [3.0], [9.0]] * 5)) == (Lattice(0, 0.0, 3.0, 4, 3),)
    with pytest.raises(DataError, match="shape"):
        discrete_columns(np.zeros(3))


def test_dequantized_stats_match_a_large_draw():
    x = _mixed(rows=200_000, seed=1).astype(np.float64)
    lattice = tuple(c for c in discrete_columns(x) if isinstance(c, Lattice))
    mean, std = dequantized_stats(tuple(x.mean(0)), tuple(x.std(0)), lattice)
    u = np.random.default_rng(2).uniform(size=x.shape)
    noisy = x.copy()
    for c in lattice:
        noisy[:, c.column] += c.spacing * u[:, c.column]
    se_mean = noisy.std(0) / math.sqrt(len(x))
    np.testing.assert_array_less(np.abs(noisy.mean(0) - mean), 5 * se_mean)
    np.testing.assert_allclose(noisy.std(0), std, rtol=0.01)
    assert (mean[0], std[3]) == (x.mean(0)[0], x.std(0)[3])  # other columns unchanged


def test_off_lattice_rows():
    x = np.array([[0.0, 0.3], [1.5, 0.7], [2.0, 0.35], [7.0, -0.1]], np.float32)
    np.testing.assert_array_equal(off_lattice_rows(x, (0, 1), (0.0, 0.1), (1.0, 0.1)), [1, 2])
    assert len(off_lattice_rows(x, (), (), ())) == 0


# --- the layer -------------------------------------------------------------------------------

LAYER = LatticeDequantization(columns=(0, 2), offsets=(-1.0, 0.2), spacings=(0.5, 0.1),
                              levels=(6, 4))


def _lattice_rows(n, seed=0):
    r = np.random.default_rng(seed)
    return jnp.asarray(np.stack([-1.0 + 0.5 * r.integers(0, 6, n), r.normal(size=n),
                                 0.2 + 0.1 * r.integers(0, 4, n)], 1), DTYPE)


@pytest.mark.float64
def test_layer_draws_within_the_cells_and_rounds_back():
    x = _lattice_rows(500)
    z, contribution = LAYER.apply({}, x, rngs={DEQUANT: jax.random.key(0)})
    h = jnp.array([0.5, 0.0, 0.1], DTYPE)
    assert bool(jnp.all((z >= x - 1e-6) & (z < x + h + 1e-6)))
    np.testing.assert_array_equal(z[:, 1], x[:, 1])  # the continuous column passes through
    assert not np.allclose(z[:, 0], x[:, 0])
    np.testing.assert_allclose(contribution, math.log(0.5) + math.log(0.1), rtol=1e-6)
    np.testing.assert_allclose(LAYER.apply({}, z, method="inverse"), x, atol=1e-6)
    far = LAYER.apply({}, z + jnp.array([10.0, 0.0, -10.0], DTYPE), method="inverse")
    np.testing.assert_allclose(far[:, 0], 1.5, rtol=1e-6)  # clipped to the top level
    np.testing.assert_allclose(far[:, 2], 0.2, rtol=1e-6)  # and to the bottom one


def test_layer_rejects_inconsistent_settings():
    with pytest.raises(ConfigError, match="one offset, spacing and level count"):
        LatticeDequantization(columns=(0, 1), offsets=(0.0,), spacings=(1.0,), levels=(2,))
    with pytest.raises(ConfigError, match="spacings must be finite and positive"):
        LatticeDequantization(columns=(0,), offsets=(0.0,), spacings=(0.0,), levels=(2,))
    with pytest.raises(ConfigError, match="distinct"):
        LatticeDequantization(columns=(1, 1), offsets=(0.0, 0.0), spacings=(1.0, 1.0),
                              levels=(2, 2))
    with pytest.raises(ConfigError, match="do not fit events of 2 columns"):
        LAYER.apply({}, jnp.zeros((3, 2)), rngs={DEQUANT: jax.random.key(0)})


@pytest.mark.float64
def test_log_prob_is_a_lower_bound_on_the_lattice_probability():
    """One lattice column (a = -1, h = 0.5) under a standard normal: the model's log_prob
    averaged over draws estimates E_u[log phi(v + h u)] + log h (closed form; tolerance from
    the standard error), which lies below log P(v) = log(Phi(v + h) - Phi(v))."""
    a, h = -1.0, 0.5
    flow = jm.Flow(LatticeDequantization(columns=(0,), offsets=(a,), spacings=(h,), levels=(5,)),
                   jm.StandardNormal((1,), dtype=DTYPE), (1,), dtype=DTYPE)
    assert flow.estimate == Estimate.BOUND
    draws = 4000
    for v in (-1.0, 0.0, 1.0):
        x = jnp.full((draws, 1), v, DTYPE)
        keys = jax.random.split(jax.random.key(int(10 * v) + 20), draws)
        log_p = jax.vmap(lambda k, x=x: flow.apply({}, x[:1], method="log_prob",
                                                  rngs={DEQUANT: k})[0])(keys)
        # E_u[(v + h u)^2] = v^2 + v h + h^2 / 3
        expected = -0.5 * math.log(2 * math.pi) - 0.5 * (v * v + v * h + h * h / 3) + math.log(h)
        se = float(np.std(log_p)) / math.sqrt(draws)
        assert abs(float(np.mean(log_p)) - expected) < 4 * se + 1e-6
        exact = math.log(norm.cdf(v + h) - norm.cdf(v))
        assert expected < exact
        rows = flow.apply({}, 200, method="sample", rngs={"sample": jax.random.key(3)})
        np.testing.assert_array_equal(off_lattice_rows(np.asarray(rows), (0,), (a,), (h,)), [])


# --- run settings ------------------------------------------------------------------------------

def test_run_settings_refuse_constant_columns():
    x = _mixed()
    x[:, 2] = 7.0
    with pytest.raises(DataError, match=r"column 2 of 'x.npy' holds one value \(7\) in every "
                                        r"training row.*drop it"):
        vector_settings(x, "x.npy", None)
    pixels = np.random.default_rng(0).integers(0, 17, (50, 4)).astype(np.float32)
    pixels[:, 0] = 0.0
    with pytest.raises(DataError, match=r"column 0 .* save them as uint8 \(N, H, W, C\) images"):
        vector_settings(pixels, "digits.npy", None)


def test_run_settings_warn_about_discrete_columns(caplog):
    with caplog.at_level(logging.WARNING, logger="jflows"):
        settings = vector_settings(_mixed(), "x.npy", None)
    text = caplog.text
    assert "columns 1, 2 of 'x.npy' take only 2 and 21 distinct values" in text
    assert "--dequantization uniform" in text
    assert "column 3 of 'x.npy' takes only 3 distinct values" in text and "recode" in text
    assert settings["lattice_columns"] is None and lattice_layers(settings) == []


def test_run_settings_dequantize_the_lattice_columns():
    x = _mixed()
    settings = vector_settings(x, "x.npy", "uniform")
    assert settings["lattice_columns"] == [1, 2]
    assert settings["lattice_spacings"] == [1.0, 0.1] and settings["lattice_levels"] == [2, 21]
    np.testing.assert_allclose(settings["mean"][1], x[:, 1].astype(np.float64).mean() + 0.5)
    (layer,) = lattice_layers(settings)
    assert layer.columns == (1, 2) and layer.offsets == (0.0, 0.0)
    with pytest.raises(ConfigError, match="only applies to image data"):
        vector_settings(x, "x.npy", "variational")
    gaussian = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(ConfigError, match="no column of 'g.npy'"):
        vector_settings(gaussian, "g.npy", "uniform")


def test_images_that_use_few_of_their_levels_are_reported(caplog):
    digits = np.random.default_rng(0).integers(0, 17, (20, 8, 8, 1)).astype(np.uint8)
    with caplog.at_level(logging.WARNING, logger="jflows"):
        warn_unused_levels(digits, 256, "d.npy")
        warn_unused_levels(digits, 17, "d.npy")  # the levels they have: no warning
        warn_unused_levels(digits + 120, 256, "bright.npy")  # above half of the levels
    assert caplog.text.count("\n") == 1
    assert "'d.npy' use values 0..16 only" in caplog.text and "--levels 17" in caplog.text


def test_repeated_rows_of_continuous_data_are_reported(caplog):
    table = np.random.default_rng(0).normal(size=(60, 3)).round(2)
    with caplog.at_level(logging.WARNING, logger="jflows"):
        vector_settings(np.tile(table, (10, 1)), "tiled.npy", None)
    assert "540 of the 600 training rows of 'tiled.npy' repeat other rows" in caplog.text
    assert "np.unique(x, axis=0)" in caplog.text
    assert "distinct values" not in caplog.text  # the columns' values repeat with the rows
    caplog.clear()
    categories = np.random.default_rng(1).integers(0, 3, (600, 2)).astype(float)
    with caplog.at_level(logging.WARNING, logger="jflows"):
        vector_settings(categories, "codes.npy", None)  # 9 possible rows: repeats expected
    assert "repeat other rows" not in caplog.text and "take only 3 and 3" in caplog.text
