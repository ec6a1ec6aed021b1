"""Image surjections: MaxPool2d (inference surjection) and VariationalDequantization (Flow++).

MaxPool2d's contribution is checked against the conditional density of the non-maximal values
written out with numpy loops over windows (scipy's half-normal), its sampler by the frequencies
of the position of the maximum; VariationalDequantization's contribution against ``-log q(u|k)``
computed by brute force (``log N(eps) - slogdet`` of the Jacobian of ``eps -> u``).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jflows import bijectors as jb
from jflows.errors import ConfigError, ShapeError
from jflows.names import DEQUANT, SAMPLE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-9 if X64 else 2e-5
LEVELS = 17


def _perturbed(params, seed, scale):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [
        p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


# --- MaxPool2d -------------------------------------------------------------------------------

def _max_pool(x, hidden=4):
    layer = jb.MaxPool2d(hidden=hidden)
    return layer, jax.jit(layer.init)(jax.random.key(0), x)


def _reference_log_p(x, sigma_of):
    """log p(x | z) by loops: -log 4 + the half-normal log-density of z - x_p for the three
    non-maximal positions p of each window; ``sigma_of(b, i, j, p, c)`` gives the scale."""
    x = np.asarray(x, np.float64)
    batch, height, width, channels = x.shape
    out = np.zeros(batch)
    for b in range(batch):
        for i in range(height // 2):
            for j in range(width // 2):
                for c in range(channels):
                    values = [x[b, 2 * i + a, 2 * j + e, c] for a in (0, 1) for e in (0, 1)]
                    m = int(np.argmax(values))
                    out[b] -= math.log(4.0)
                    for p in range(4):
                        if p != m:
                            scale = sigma_of(b, i, j, p, c)
                            out[b] += stats.halfnorm.logpdf(values[m] - values[p], scale=scale)
    return out


def test_max_pool_keeps_the_window_maxima_for_any_batch_axes():
    x = jax.random.normal(jax.random.key(1), (2, 3, 6, 4, 3), DTYPE)
    layer, variables = _max_pool(x)
    z, contribution = jax.jit(layer.apply)(variables, x)
    expected = x.reshape(2, 3, 3, 2, 2, 2, 3).max(axis=(-4, -2))
    np.testing.assert_array_equal(z, expected)
    assert contribution.shape == (2, 3)
    z1, c1 = jax.jit(layer.apply)(variables, x[1, 2])  # one event, no batch axis
    np.testing.assert_array_equal(z1, expected[1, 2])
    np.testing.assert_allclose(c1, contribution[1, 2], rtol=TOL, atol=TOL)


@pytest.mark.float64
def test_max_pool_contribution_at_initialisation_is_the_unit_half_normal():
    x = jax.random.normal(jax.random.key(2), (3, 4, 6, 2), DTYPE)
    layer, variables = _max_pool(x)
    _, contribution = jax.jit(layer.apply)(variables, x)
    expected = _reference_log_p(x, lambda *_: 1.0)
    np.testing.assert_allclose(contribution, expected, rtol=TOL, atol=TOL)


@pytest.mark.float64
def test_max_pool_contribution_with_known_scales_per_position_and_channel():
    """The output bias r of the (zero-kernel) last convolution sets sigma_{p,c} =
    exp(5 tanh(r_{pC+c} / 5)) in every window."""
    x = 2.0 * jax.random.normal(jax.random.key(3), (2, 4, 4, 3), DTYPE)
    layer, variables = _max_pool(x)
    channels = x.shape[-1]
    bias = jnp.linspace(-1.5, 2.0, 4 * channels, dtype=DTYPE)
    params = jax.tree.map(lambda v: v, variables["params"])
    assert not np.any(params["net"]["Conv_2"]["kernel"])
    params["net"]["Conv_2"]["bias"] = bias
    _, contribution = jax.jit(layer.apply)({"params": params}, x)
    sigma = np.exp(5.0 * np.tanh(np.asarray(bias, np.float64) / 5.0)).reshape(4, channels)
    expected = _reference_log_p(x, lambda b, i, j, p, c: sigma[p, c])
    np.testing.assert_allclose(contribution, expected, rtol=TOL, atol=TOL)
    assert np.all(np.abs(expected - _reference_log_p(x, lambda *_: 1.0)) > 1.0)  # non-trivial


@pytest.mark.float64
def test_max_pool_contribution_with_scales_depending_on_z():
    """Random network: the scales differ per window; they are read from ``log_scales(z)``."""
    x = jax.random.normal(jax.random.key(4), (2, 4, 4, 2), DTYPE)
    layer, variables = _max_pool(x)
    variables = {"params": _perturbed(variables["params"], 5, 0.5)}
    z, contribution = jax.jit(layer.apply)(variables, x)
    log_scales = jax.jit(functools.partial(layer.apply, method="log_scales"))(variables, z)
    sigma = np.exp(np.asarray(log_scales, np.float64))
    assert sigma.shape == (2, 2, 2, 4, 2) and np.ptp(sigma[..., 0, 0]) > 1e-3
    expected = _reference_log_p(x, lambda b, i, j, p, c: sigma[b, i, j, p, c])
    np.testing.assert_allclose(contribution, expected, rtol=TOL, atol=TOL)


def test_max_pool_inverse_puts_the_max_at_a_uniform_position_with_half_normal_gaps():
    z = jax.random.normal(jax.random.key(6), (200, 4, 4, 2), DTYPE)
    layer, variables = _max_pool(jnp.zeros((1, 8, 8, 2), DTYPE))
    inverse = jax.jit(functools.partial(layer.apply, method="inverse"))
    x = inverse(variables, z, rngs={SAMPLE: jax.random.key(7)})
    assert x.shape == (200, 8, 8, 2)
    windows = np.asarray(x).reshape(200, 4, 2, 4, 2, 2).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(200, 4, 4, 2, 4)  # (..., position 2a + b)
    zn = np.asarray(z)[..., None]
    at_max = windows == zn
    assert np.all(at_max.sum(-1) == 1)  # exactly one position holds z, the others are below
    assert np.all(windows[~at_max] < np.broadcast_to(zn, windows.shape)[~at_max])
    n = at_max[..., 0].size
    freq = at_max.reshape(n, 4).mean(0)
    stderr = math.sqrt(0.25 * 0.75 / n)
    np.testing.assert_array_less(np.abs(freq - 0.25), 4 * stderr)
    gaps = (np.broadcast_to(zn, windows.shape) - windows)[~at_max]  # HalfNormal(1) at init
    mean, sd = math.sqrt(2 / math.pi), math.sqrt(1 - 2 / math.pi)
    assert abs(gaps.mean() - mean) < 4 * sd / math.sqrt(gaps.size)


def test_max_pool_odd_sizes_raise_a_shape_error():
    layer = jb.MaxPool2d(hidden=4)
    for shape in ((2, 5, 4, 1), (4, 3, 1), (3, 3, 2)):
        with pytest.raises(ShapeError, match=r"even height and width.*crop or pad"):
            layer.init(jax.random.key(0), jnp.zeros(shape))


# --- VariationalDequantization ---------------------------------------------------------------

def _levels(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, LEVELS, shape), jnp.uint8)


def _vd(k, n_couplings=2, perturb=None):
    layer = jb.VariationalDequantization(levels=LEVELS, hidden=4, n_couplings=n_couplings)
    variables = jax.jit(layer.init)({"params": jax.random.key(0), DEQUANT: jax.random.key(1)}, k)
    if perturb is not None:
        variables = {"params": _perturbed(variables["params"], perturb, 0.3)}
    return layer, variables


def test_variational_dequantization_stays_in_the_unit_cell_of_each_level():
    k = _levels((20, 4, 4, 2)).at[0].set(LEVELS - 1)
    layer, variables = _vd(k, perturb=1)
    z, contribution = jax.jit(layer.apply)(variables, k, rngs={DEQUANT: jax.random.key(2)})
    assert z.dtype == jnp.result_type(float) and contribution.shape == (20,)
    kf = k.astype(z.dtype)
    assert bool(jnp.all((z >= kf) & (z < kf + 1)))
    np.testing.assert_array_equal(jnp.floor(z), kf)
    np.testing.assert_array_equal(layer.apply(variables, z, method="inverse"), kf)
    np.testing.assert_array_equal(layer.apply(variables, z + 40.0, method="inverse"), LEVELS - 1)
    assert bool(jnp.all(jnp.isfinite(contribution)))


@pytest.mark.float64
@pytest.mark.parametrize("perturb", [None, 3], ids=["init", "trained"])
def test_variational_dequantization_contribution_is_minus_log_q_by_brute_force(perturb):
    """For one event: the eps the layer drew (recorded by intercepting noise_and_log_q), u by
    the map eps -> u, and log q(u) = log N(eps) - slogdet(d u / d eps) from jax.jacfwd."""
    k = _levels((4, 4, 2), seed=5)
    layer, variables = _vd(k, perturb=perturb)
    drawn = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "noise_and_log_q":
            drawn.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        z, contribution = layer.apply(variables, k, rngs={DEQUANT: jax.random.key(8)})
    (eps,) = drawn

    def noise(e):
        u, _ = layer.apply(variables, e.reshape(k.shape), k, method="noise_and_log_q")
        return u.reshape(-1)

    noise = jax.jit(noise)
    u = noise(eps.reshape(-1))
    np.testing.assert_allclose(z - k.astype(z.dtype), u.reshape(k.shape), rtol=TOL, atol=TOL)
    sign, logabsdet = np.linalg.slogdet(np.asarray(jax.jit(jax.jacfwd(noise))(eps.reshape(-1))))
    assert sign > 0  # the map is orientation-preserving
    log_q = stats.norm.logpdf(np.asarray(eps, np.float64)).sum() - logabsdet
    np.testing.assert_allclose(contribution, -log_q, rtol=10 * TOL, atol=10 * TOL)


def test_variational_dequantization_gradients_reach_every_parameter():
    k = _levels((4, 4, 4, 2), seed=6)
    layer, variables = _vd(k, perturb=4)
    key = jax.random.key(9)

    def loss(params):
        return layer.apply({"params": params}, k, rngs={DEQUANT: key})[1].mean()

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.any(np.asarray(g) != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_variational_dequantization_checks_its_arguments():
    with pytest.raises(ConfigError, match="levels >= 2"):
        jb.VariationalDequantization(levels=1)
    with pytest.raises(ConfigError, match="n_couplings >= 0"):
        jb.VariationalDequantization(n_couplings=-1)
    layer = jb.VariationalDequantization(hidden=4)
    with pytest.raises(ShapeError, match=r"\(\.\.\., H, W, C\)"):
        layer.init({"params": jax.random.key(0), DEQUANT: jax.random.key(1)}, jnp.zeros((3, 4)))
