"""SplineCoupling and the nsf factory: identity at init, exact inverse and log-det, context, errors.

The contract suite (``tests/registry.py``: ``spline_coupling*``, ``model_nsf_*``) checks round
trips, log-dets and batching on perturbed parameters; this file adds what is specific to the
spline coupling. Exactness tests are marked ``float64`` (tolerances follow the dtype).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import models as jm
from jflows.bijectors import MLP, ConvNet, SplineCoupling
from jflows.errors import ConfigError, ShapeError

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-9 if X64 else 1e-4


def _perturbed(variables, scale=0.5, seed=7):
    """Every parameter plus N(0, scale^2) noise, so the zero-initialised layer is not identity."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, noisy)


def _layer_and_data(event_ndims=1, parity=0, use_context=False, n=6):
    key = jax.random.key(0)
    if event_ndims == 1:
        layer = SplineCoupling(1, parity, MLP((16,)), num_bins=5, bound=2.5,
                               use_context=use_context)
        x = 1.5 * jax.random.normal(key, (n, 5), DTYPE)
    else:
        layer = SplineCoupling(3, parity, ConvNet(4), num_bins=3, use_context=use_context)
        x = 1.5 * jax.random.normal(key, (n, 2, 2, 3), DTYPE)
    c = jnp.linspace(-1.0, 1.0, 2 * n, dtype=DTYPE).reshape(n, 2) if use_context else None
    args = (x,) if c is None else (x, c)
    variables = layer.init(jax.random.key(1), *args)
    return layer, x, c, variables


@pytest.mark.parametrize("event_ndims", [1, 3])
def test_starts_as_the_identity(event_ndims):
    layer, x, _, variables = _layer_and_data(event_ndims)
    z, logdet = layer.apply(variables, x)
    np.testing.assert_allclose(z, x, atol=1e-6)
    np.testing.assert_allclose(logdet, 0.0, atol=1e-5)


@pytest.mark.float64
@pytest.mark.parametrize(("event_ndims", "parity"), [
    (1, 0), pytest.param(1, 1, marks=pytest.mark.slow),
    pytest.param(3, 0, marks=pytest.mark.slow), (3, 1)])
def test_round_trip_and_log_det_against_brute_force(event_ndims, parity):
    layer, x, _, variables = _layer_and_data(event_ndims, parity, n=4)
    variables = _perturbed(variables, 0.3 if event_ndims == 1 else 0.2)
    z, logdet = layer.apply(variables, x)
    assert not np.allclose(z, x, atol=1e-3), "the perturbed layer should move the data"
    back, inv_logdet = layer.apply(variables, z, method="inverse_and_log_det")
    np.testing.assert_allclose(back, x, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(inv_logdet, -logdet, atol=TOL, rtol=TOL)

    def one(v):
        return layer.apply(variables, v[None], method="forward")[0].reshape(-1)

    jac = jax.jit(jax.vmap(jax.jacfwd(one)))(x).reshape(x.shape[0], x[0].size, x[0].size)
    sign, brute = jnp.linalg.slogdet(jac)
    assert bool(jnp.all(sign > 0))
    np.testing.assert_allclose(logdet, brute, atol=TOL, rtol=TOL)


def test_only_the_transformed_half_moves():
    layer, x, _, variables = _layer_and_data(1, parity=1)
    z, _ = layer.apply(_perturbed(variables), x)
    np.testing.assert_array_equal(z[:, 3:], x[:, 3:])  # parity 1 keeps the second half
    assert not np.allclose(z[:, :3], x[:, :3], atol=1e-3)


@pytest.mark.parametrize("event_ndims", [1, 3])
def test_context_changes_the_output(event_ndims):
    layer, x, c, variables = _layer_and_data(event_ndims, use_context=True)
    variables = _perturbed(variables)
    z1, ld1 = layer.apply(variables, x, c)
    z2, ld2 = layer.apply(variables, x, c + 1.0)
    assert not np.allclose(z1, z2, atol=1e-4) and not np.allclose(ld1, ld2, atol=1e-4)
    back, _ = layer.apply(variables, z1, c, method="inverse_and_log_det")
    np.testing.assert_allclose(back, x, atol=1e-4)
    with pytest.raises(ShapeError, match="needs a context"):
        layer.apply(variables, x)


def test_nsf_conditional_model_depends_on_the_context():
    flow = jm.nsf((3,), n_couplings=2, hidden=(8,), num_bins=4, context_shape=(1,))
    x = jax.random.normal(jax.random.key(0), (4, 3))
    c = jnp.zeros((4, 1))
    init = jax.jit(lambda k: flow.init(k, x, c, method="log_prob"))
    variables = _perturbed(init(jax.random.key(1)), 0.3)
    log_prob = jax.jit(lambda v, x, c: flow.apply(v, x, c, method="log_prob"))
    lp0, lp1 = log_prob(variables, x, c), log_prob(variables, x, c + 1.0)
    assert lp0.shape == (4,) and not np.allclose(lp0, lp1, atol=1e-4)


def test_nsf_image_keeps_the_shape_and_starts_at_the_base_density():
    flow = jm.nsf((4, 4, 1), n_couplings=2, hidden=4, num_bins=3)
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    z = jax.jit(lambda k: flow.apply(flow.init(k, x), x, method="forward"))(jax.random.key(1))
    np.testing.assert_allclose(z, x, atol=1e-6)  # squeeze, identity couplings, unsqueeze


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(num_bins=0), "num_bins=0"),
    (dict(num_bins=2.5), "num_bins=2.5"),
    (dict(bound=-1.0), "bound=-1.0"),
    (dict(bound=float("inf")), "bound=inf"),
    (dict(event_ndims=2), "event_ndims=2"),
    (dict(parity=2), "parity=2"),
])
def test_bad_layer_settings_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SplineCoupling(**kwargs)


def test_a_single_feature_cannot_be_split():
    layer = SplineCoupling(1, conditioner=MLP((4,)))
    with pytest.raises(ShapeError, match="at least 2 features"):
        layer.init(jax.random.key(0), jnp.zeros((3, 1)))


@pytest.mark.parametrize(("shape", "kwargs", "match"), [
    ((1,), {}, "at least 2 dimensions"),
    ((2,), dict(n_couplings=3), "n_couplings"),
    ((2,), dict(num_bins=-4), "num_bins"),
    ((2,), dict(bound=0), "bound"),
    ((5, 4, 1), {}, "H and W must be even"),
    ((2, 2), {}, "event_shape"),
])
def test_bad_nsf_arguments_raise_config_errors(shape, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        jm.nsf(shape, **kwargs)


@pytest.mark.slow
def test_nsf_permutes_features_between_pairs_for_more_than_two():
    """At initialisation the splines are the identity, so the flow is exactly the fixed
    permutation applied once per coupling pair (d > 2), and the identity without it."""
    from jflows.bijectors import Permute

    x = jax.random.normal(jax.random.key(0), (4, 6))
    mixed = jm.nsf((6,), n_couplings=4, hidden=(8,))
    z = mixed.apply(mixed.init(jax.random.key(1), x), x, method="forward")
    perm = np.asarray(Permute.random(6, seed=0).permutation)
    np.testing.assert_allclose(z, np.asarray(x)[:, perm][:, perm], rtol=1e-6, atol=1e-6)
    halves = jm.nsf((6,), n_couplings=4, hidden=(8,), permutation="none")
    z = halves.apply(halves.init(jax.random.key(1), x), x, method="forward")
    np.testing.assert_allclose(z, x, rtol=1e-6, atol=1e-6)
    two = jm.nsf((2,), n_couplings=2, hidden=(8,))  # d = 2: halves already alternate
    y = x[:, :2]
    np.testing.assert_allclose(two.apply(two.init(jax.random.key(1), y), y, method="forward"),
                               y, rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="permutation"):
        jm.nsf((6,), permutation="reverse")
