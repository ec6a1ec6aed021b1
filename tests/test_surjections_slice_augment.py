"""Slice and Augment (SurVAE flows): contributions against closed-form Gaussian densities.

The conditional densities are set to known Gaussians through the parameters: the output layer
of the conditional network gives ``(mean, raw log-scale)`` and the log-scale is
``5 tanh(raw / 5)`` (``bounded_log_scale``). With no hidden layer (vectors, ``hidden=()``) the
mean and raw log-scale are a known affine map of the conditioning array.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from jflows import bijectors as jb
from jflows import models as jm
from jflows.errors import ConfigError, MissingRngError, NotBijectiveError, ShapeError
from jflows.names import NOISE, SAMPLE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-10 if X64 else 2e-5


def _log_scale(raw):
    return 5.0 * np.tanh(np.asarray(raw, np.float64) / 5.0)


def _set_output(variables, bias, kernel=None):
    """The conditional network's last layer set to ``bias`` (and ``kernel``, default 0)."""
    params = jax.tree.map(lambda v: v, variables["params"])
    net = params["density"]["net"]
    last = max(net, key=lambda name: int(name.rsplit("_", 1)[-1]))
    layer = dict(net[last])
    layer["bias"] = jnp.asarray(bias, layer["bias"].dtype)
    layer["kernel"] = (jnp.zeros_like(layer["kernel"]) if kernel is None
                       else jnp.asarray(kernel, layer["kernel"].dtype))
    net[last] = layer
    return {**variables, "params": params}


# --- Slice -----------------------------------------------------------------------------------

@pytest.mark.float64
def test_slice_contribution_is_the_known_gaussian_of_the_dropped_vector_entries():
    keep, drop = 2, 3
    x = jax.random.normal(jax.random.key(0), (2, 5, keep + drop), DTYPE)
    layer = jb.Slice(keep=keep, hidden=())
    variables = layer.init(jax.random.key(1), x)
    w = np.random.default_rng(0).normal(size=(keep, 2 * drop)) * 0.7
    b = np.array([0.3, -1.0, 2.0, 0.4, -0.6, 1.5])
    variables = _set_output(variables, b, w)
    z, contribution = layer.apply(variables, x)
    np.testing.assert_array_equal(z, x[..., :keep])
    out = np.asarray(z, np.float64) @ w + b  # affine: no hidden layer
    mean, log_scale = out[..., :drop], _log_scale(out[..., drop:])
    expected = norm.logpdf(np.asarray(x[..., keep:], np.float64), mean, np.exp(log_scale))
    assert contribution.shape == (2, 5)
    np.testing.assert_allclose(contribution, expected.sum(-1), rtol=TOL, atol=TOL)


@pytest.mark.float64
def test_slice_contribution_is_the_known_gaussian_of_the_dropped_channels():
    x = jax.random.normal(jax.random.key(2), (3, 4, 4, 3), DTYPE)
    layer = jb.Slice(keep=1, event_ndims=3, hidden=4)
    variables = _set_output(layer.init(jax.random.key(3), x), [0.5, -0.25, 0.8, -1.2])
    z, contribution = layer.apply(variables, x)
    assert z.shape == (3, 4, 4, 1) and contribution.shape == (3,)
    mean, scale = np.array([0.5, -0.25]), np.exp(_log_scale([0.8, -1.2]))
    expected = norm.logpdf(np.asarray(x[..., 1:], np.float64), mean, scale).sum((1, 2, 3))
    np.testing.assert_allclose(contribution, expected, rtol=TOL, atol=TOL)


@pytest.mark.float64
@pytest.mark.parametrize(("shape", "keep", "base_shape"),
                         [((4,), 2, (2,)), ((2, 2, 3), 2, (2, 2, 2))])
def test_slice_with_a_standard_normal_base_is_the_exact_standard_normal(shape, keep, base_shape):
    """At initialisation p(x_d | z) = N(0, I): log N(z) + log N(x_d) = log N(x; 0, I)."""
    event_ndims = len(shape)
    flow = jm.Flow(jb.Slice(keep=keep, event_ndims=event_ndims, hidden=4),
                   jm.StandardNormal(base_shape, dtype=DTYPE), shape, dtype=DTYPE)
    x = 1.3 * jax.random.normal(jax.random.key(4), (6, *shape), DTYPE)
    variables = flow.init(jax.random.key(5), x, method="log_prob")
    assert flow.latent_shape == base_shape and flow.estimate == jb.Estimate.EXACT
    expected = norm.logpdf(np.asarray(x, np.float64)).reshape(6, -1).sum(-1)
    np.testing.assert_allclose(flow.apply(variables, x, method="log_prob"), expected,
                               rtol=TOL, atol=TOL)
    samples = flow.apply(variables, 5, method="sample", rngs={SAMPLE: jax.random.key(6)})
    assert samples.shape == (5, *shape)


def test_slice_inverse_draws_from_the_known_conditional():
    keep, drop, n = 2, 2, 4000
    layer = jb.Slice(keep=keep, hidden=())
    w = np.array([[1.0, 0.0, 0.0, 0.3], [0.0, -2.0, 0.2, 0.0]])
    b = np.array([0.5, 1.0, -0.7, 0.4])
    z = jnp.tile(jnp.array([[0.4, -0.3]], DTYPE), (n, 1))
    variables = _set_output(layer.init(jax.random.key(0), jnp.zeros((1, 4), DTYPE)), b, w)
    x = layer.apply(variables, z, method="inverse", rngs={SAMPLE: jax.random.key(7)})
    assert x.shape == (n, keep + drop)
    np.testing.assert_array_equal(x[:, :keep], z)
    out = np.array([0.4, -0.3]) @ w + b
    mean, std = out[:drop], np.exp(_log_scale(out[drop:]))
    dropped = np.asarray(x[:, keep:], np.float64)
    assert np.all(np.abs(dropped.mean(0) - mean) < 4 * std / math.sqrt(n))
    assert np.all(np.abs(dropped.std(0) - std) < 4 * std / math.sqrt(2 * n))
    np.testing.assert_allclose(layer.apply(variables, x)[0], z)  # forward(inverse(z)) == z


def test_slice_errors_name_the_value_and_the_fix():
    with pytest.raises(ConfigError, match="keep=0"):
        jb.Slice(keep=0)
    with pytest.raises(ConfigError, match="event_ndims 1 .* or 3"):
        jb.Slice(keep=1, event_ndims=2)
    layer = jb.Slice(keep=3, hidden=(4,))
    with pytest.raises(ShapeError, match=r"keep=3.*\(2, 3\).*choose keep"):
        layer.init(jax.random.key(0), jnp.zeros((2, 3)))
    with pytest.raises(ConfigError, match="initialise it on data first"):
        layer.apply({}, jnp.zeros((2, 3)), method="inverse", rngs={SAMPLE: jax.random.key(0)})


# --- Augment ---------------------------------------------------------------------------------

def _augment(features, shape, bias=None, event_ndims=1, hidden=(8,)):
    layer = jb.Augment(features=features, event_ndims=event_ndims, hidden=hidden)
    x = jax.random.normal(jax.random.key(10), (1, *shape), DTYPE)
    variables = layer.init({"params": jax.random.key(11), NOISE: jax.random.key(12)}, x)
    if bias is not None:
        variables = _set_output(variables, bias)
    return layer, variables


@pytest.mark.float64
@pytest.mark.parametrize("event_ndims", [1, 3])
def test_augment_contribution_is_minus_log_q_of_the_drawn_entries(event_ndims):
    shape = (3,) if event_ndims == 1 else (4, 4, 2)
    raw = [0.7, -0.4, -0.8, 1.1]  # means of the 2 entries, then their raw log-scales
    layer, variables = _augment(2, shape, raw, event_ndims, hidden=(8,) if event_ndims == 1 else 4)
    x = jax.random.normal(jax.random.key(13), (5, *shape), DTYPE)
    z, contribution = layer.apply(variables, x, rngs={NOISE: jax.random.key(14)})
    assert z.shape == (5, *shape[:-1], shape[-1] + 2) and contribution.shape == (5,)
    np.testing.assert_array_equal(z[..., : shape[-1]], x)
    a = np.asarray(z[..., shape[-1]:], np.float64)
    log_q = norm.logpdf(a, np.array(raw[:2]), np.exp(_log_scale(raw[2:])))
    np.testing.assert_allclose(contribution, -log_q.reshape(5, -1).sum(-1), rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(layer.apply(variables, z, method="inverse"), x)  # no stream


def test_augment_needs_noise_and_has_no_inverse_log_det():
    layer, variables = _augment(2, (3,))
    x = jnp.zeros((2, 3), DTYPE)
    with pytest.raises(MissingRngError, match="'noise'"):
        layer.apply(variables, x)
    with pytest.raises(MissingRngError, match="'noise'"):
        layer.apply(variables, x, method="forward")
    with pytest.raises(NotBijectiveError, match="not a bijection"):
        layer.apply(variables, jnp.zeros((2, 5)), method="inverse_and_log_det")
    draws = [layer.apply(variables, x, method="forward", rngs={NOISE: jax.random.key(s)})
             for s in (0, 1)]
    assert not np.allclose(draws[0], draws[1])  # forward draws too
    with pytest.raises(ConfigError, match="features=0"):
        jb.Augment(features=0)


def _augmented_flow(d, a):
    return jm.Flow(jb.Augment(features=a, hidden=(8,)), jm.StandardNormal((d + a,), dtype=DTYPE),
                   (d,), dtype=DTYPE)


@pytest.mark.float64
def test_augment_with_standard_normal_q_gives_the_exact_density_for_every_draw():
    flow = _augmented_flow(3, 2)
    x = 1.5 * jax.random.normal(jax.random.key(15), (4, 3), DTYPE)
    variables = flow.init({"params": jax.random.key(16), NOISE: jax.random.key(17)}, x,
                          method="log_prob")
    keys = jax.random.split(jax.random.key(18), 8)
    values = jax.jit(jax.vmap(
        lambda k: flow.apply(variables, x, method="log_prob", rngs={NOISE: k})))(keys)
    expected = norm.logpdf(np.asarray(x, np.float64)).sum(-1)
    np.testing.assert_allclose(values, np.broadcast_to(expected, (8, 4)), rtol=TOL, atol=TOL)


@pytest.mark.float64
def test_augment_elbo_is_the_density_minus_the_closed_form_kl_in_expectation():
    """E_q[log N(x, a) - log q(a)] = log N(x) - KL(N(m, s^2) || N(0, 1)) per appended entry."""
    m, raw = np.array([0.8, -0.5]), np.array([-0.6, 0.4])
    s = np.exp(_log_scale(raw))
    flow = _augmented_flow(2, 2)
    x = jnp.array([[0.3, -1.2], [1.5, 0.4]], DTYPE)
    variables = flow.init({"params": jax.random.key(19), NOISE: jax.random.key(20)}, x,
                          method="log_prob")
    variables = {"params": {"bijector": _set_output(
        {"params": variables["params"]["bijector"]}, np.concatenate([m, raw]))["params"]}}
    n = 4000
    keys = jax.random.split(jax.random.key(21), n)
    values = jax.jit(jax.vmap(
        lambda k: flow.apply(variables, x, method="log_prob", rngs={NOISE: k})))(keys)
    kl = np.sum(-np.log(s) + (s**2 + m**2) / 2 - 0.5)
    expected = norm.logpdf(np.asarray(x, np.float64)).sum(-1) - kl
    mean = np.asarray(values, np.float64).mean(0)
    stderr = np.asarray(values, np.float64).std(0) / math.sqrt(n)
    assert np.all(stderr > 0)
    assert np.all(np.abs(mean - expected) < 4 * stderr)
