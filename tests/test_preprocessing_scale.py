"""Image pre-processing maps [0, levels) onto [0, 1) with log-det exactly -D log(levels).

A scale of 1/(levels - 1) instead of 1/levels would stay self-consistent (the scale and its
log-det agree) and shift every bits/dim silently; these checks pin the constant itself.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows.bijectors import Chain, UniformDequantization
from jflows.models import image_preprocessing
from jflows.training.metrics import summarize_nll

SHAPE = (4, 4, 3)
D = math.prod(SHAPE)


def forward(levels, x):
    """The scaling part (after the dequantization layer) on already dequantized ``x``."""
    dequantization, *scaling = image_preprocessing(levels)
    assert isinstance(dequantization, UniformDequantization)
    chain = Chain(scaling)
    variables = chain.init(jax.random.key(0), x, method="forward_and_log_det")
    return chain.apply(variables, x, method="forward_and_log_det")


@pytest.mark.float64
@pytest.mark.parametrize("levels", [2, 32, 256])
def test_scaling_maps_the_dequantized_range_onto_the_unit_interval(levels):
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    rng = np.random.default_rng(0)
    k = rng.integers(0, levels, (6, *SHAPE))
    k[0], k[1] = 0, levels - 1  # the two ends of the range
    u = rng.uniform(0.0, 1.0, k.shape)
    u[0], u[1] = 0.0, 0.999
    x = jnp.asarray(k + u, dtype)
    z, logdet = forward(levels, x)
    np.testing.assert_allclose(z, np.asarray(x, np.float64) / levels, rtol=1e-6)
    assert float(jnp.min(z)) == 0.0 and float(jnp.max(z)) < 1.0
    assert float(jnp.max(z)) > 1.0 - 1.0 / levels  # the top level reaches the top of [0, 1)
    np.testing.assert_allclose(logdet, -D * math.log(levels), rtol=1e-6)


@pytest.mark.parametrize("levels", [2, 32, 256])
def test_uniform_density_over_the_levels_scores_log2_levels_bits_per_dim(levels):
    """Uniform on [0, 1)^D after the scaling (log-density 0) is uniform over the levels of the
    data: exactly log2(levels) bits per dimension."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.integers(0, levels, (8, *SHAPE)) + rng.uniform(0, 1, (8, *SHAPE)),
                    jnp.float32)
    z, logdet = forward(levels, x)
    assert bool(jnp.all((z >= 0) & (z < 1)))  # inside the uniform base's support
    log_prob = 0.0 + np.asarray(logdet, np.float64)
    summary = summarize_nll(-log_prob, D, True)
    assert summary["bits_per_dim"] == pytest.approx(math.log2(levels), rel=1e-6)


@pytest.mark.parametrize("levels", [2, 256])
def test_full_preprocessing_takes_integer_levels(levels):
    """With the dequantization layer in front, integer levels map into [k, k+1) / levels."""
    k = np.random.default_rng(2).integers(0, levels, (5, *SHAPE)).astype(np.uint8)
    chain = Chain(image_preprocessing(levels))
    rngs = {"dequant": jax.random.key(3)}
    z, logdet = chain.apply({}, jnp.asarray(k), rngs=rngs)
    x, k = np.asarray(z, np.float64) * levels, k.astype(np.int64)  # level units, rounding ~1e-5
    assert ((x > k - 1e-3) & (x < k + 1 + 1e-3)).all() and not np.allclose(x, k)
    np.testing.assert_allclose(logdet, -D * math.log(levels), rtol=1e-6)
    assert chain.estimate.name == "BOUND" and chain.rng_streams == {"dequant"}
