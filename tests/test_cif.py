"""Continuously indexed flows: the IndexedBijection layer and the cif model factory."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jflows.bijectors as jb
import jflows.models as jm
from jflows.errors import ConfigError, MissingRngError, NotBijectiveError
from jflows.names import NOISE, PARAMS, SAMPLE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-9 if X64 else 2e-4
LOG_2PI = math.log(2.0 * math.pi)


def _perturbed(variables, scale=0.3, seed=42):
    """Every parameter moved by ``N(0, scale^2)`` (zero-initialised networks start trivial)."""
    leaves, tree = jax.tree.flatten(variables[PARAMS])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    return {**variables, PARAMS: jax.tree.unflatten(tree, moved)}


def _coupling_pair(d):
    return jm.realnvp((d,), n_couplings=2, hidden=(8,), dtype=DTYPE).bijector


LAYERS = {
    "vector_realnvp": (lambda: jb.IndexedBijection(_coupling_pair(3), index_dims=2, hidden=(8,)),
                       (3,), 1),
    "image_actnorm": (lambda: jb.IndexedBijection(jb.ActNorm(event_ndims=3), index_dims=1,
                                                  event_ndims=3, hidden=4), (2, 2, 2), 3),
}


def _setup(name, batch=3):
    make, shape, event_ndims = LAYERS[name]
    layer = make()
    x = jax.random.normal(jax.random.key(3), (batch, *shape), DTYPE)
    variables = layer.init({PARAMS: jax.random.key(0), NOISE: jax.random.key(1)}, x)
    return layer, _perturbed(variables), x, shape, event_ndims


def _normal_log_density(y, mean, log_scale, event_ndims):
    e = -0.5 * ((y - mean) * jnp.exp(-log_scale)) ** 2 - log_scale - 0.5 * LOG_2PI
    return e.reshape(*e.shape[: e.ndim - event_ndims], -1).sum(-1)


def _layers_fast_except(slow_name):
    """Every layer case, the one named running in the full suite only (fast loop budget)."""
    return [pytest.param(n, marks=pytest.mark.slow) if n == slow_name else n
            for n in sorted(LAYERS)]


@pytest.mark.float64
@pytest.mark.parametrize("name", _layers_fast_except("image_actnorm"))
def test_contribution_is_logdet_plus_log_prior_minus_log_posterior(name):
    layer, variables, x, shape, event_ndims = _setup(name)
    key = jax.random.key(7)
    z, c = layer.apply(variables, x, rngs={NOISE: key})
    dims = layer.index_dims

    # the index drawn by the layer: the first key of its noise stream, through q's own sampler
    def draw(m, x):
        return m.posterior.sample(jb.require_rng(m, NOISE), x, dims)

    u = layer.apply(variables, x, method=draw, rngs={NOISE: key})

    def indexed(m, x, u):
        return m.indexed_forward_and_log_det(x, u)[0]

    def event_map(xi, ui):
        return layer.apply(variables, xi, ui, method=indexed)

    size = math.prod(shape)

    @jax.jit
    @jax.vmap
    def reference(xi, ui):  # one event at a time: brute-force log-det and both densities
        jac = jax.jacfwd(event_map)(xi, ui).reshape(size, size)
        zi = event_map(xi, ui)
        mq, sq = layer.apply(variables, xi, dims,
                             method=lambda m, c, n: m.posterior.mean_and_log_scale(c, n))
        mp, sp = layer.apply(variables, zi, dims,
                             method=lambda m, c, n: m.prior.mean_and_log_scale(c, n))
        log_q = _normal_log_density(ui, mq, sq, event_ndims)
        log_p = _normal_log_density(ui, mp, sp, event_ndims)
        return zi, jnp.linalg.slogdet(jac)[1] + log_p - log_q

    z_ref, c_ref = reference(x, u)
    np.testing.assert_allclose(z, z_ref, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(c, c_ref, rtol=TOL, atol=10 * TOL)
    assert c.dtype == DTYPE and z.dtype == DTYPE


@pytest.mark.float64
@pytest.mark.parametrize("name", _layers_fast_except("vector_realnvp"))
def test_indexed_map_inverts_at_a_fixed_index_and_inverse_draws_from_sample(name):
    layer, variables, x, shape, _ = _setup(name)
    u = jax.random.normal(jax.random.key(5), (*x.shape[:-1], layer.index_dims), DTYPE)
    z = layer.apply(variables, x, u, method=lambda m, x, u: m.indexed_forward_and_log_det(x, u)[0])
    back = layer.apply(variables, z, u, method=lambda m, z, u: m.indexed_inverse(z, u))
    np.testing.assert_allclose(back, x, rtol=TOL, atol=TOL)
    drawn = layer.apply(variables, z, method="inverse", rngs={SAMPLE: jax.random.key(2)})
    again = layer.apply(variables, z, method="inverse", rngs={SAMPLE: jax.random.key(2)})
    other = layer.apply(variables, z, method="inverse", rngs={SAMPLE: jax.random.key(3)})
    assert drawn.shape == x.shape and bool(jnp.all(jnp.isfinite(drawn)))
    np.testing.assert_array_equal(drawn, again)
    assert not np.allclose(drawn, other)
    fwd = layer.apply(variables, x, method="forward", rngs={NOISE: jax.random.key(4)})
    full = layer.apply(variables, x, rngs={NOISE: jax.random.key(4)})[0]
    np.testing.assert_allclose(fwd, full, rtol=TOL, atol=TOL)
    with pytest.raises(NotBijectiveError, match="IndexedBijection"):
        layer.apply(variables, z, method="inverse_and_log_det")
    with pytest.raises(MissingRngError, match="'sample'"):
        layer.apply(variables, z, method="inverse")


@pytest.mark.float64
@pytest.mark.slow
def test_elbo_is_below_the_exact_likelihood_and_the_iwbo_approaches_it():
    """1-D: ``p(x) = int N(F(x;u); 0, 1) |F'(x;u)| p(u | F(x;u)) du`` by quadrature.

    The quadrature is checked first: the model's marginal density integrates to 1 over x.
    """
    layer = jb.IndexedBijection(jb.ActNorm(), index_dims=1, hidden=(8,))
    x = jnp.array([[0.7], [-1.6]], DTYPE)
    variables = _perturbed(layer.init({PARAMS: jax.random.key(0), NOISE: jax.random.key(1)}, x),
                           scale=0.3)

    def joint(m, x, u):  # log N(z) + log|dF/dx| + log p(u | z) at a given index
        z, logdet = m.indexed_forward_and_log_det(x, u)
        log_base = -0.5 * (z * z).sum(-1) - 0.5 * LOG_2PI
        return log_base + logdet + m.prior.log_prob(u, z)

    grid = jnp.linspace(-25.0, 25.0, 2501, dtype=DTYPE)
    step = grid[1] - grid[0]

    @jax.jit
    def log_marginal(xs):  # (n, 1) -> (n,)
        us = jnp.broadcast_to(grid[:, None, None], (len(grid), len(xs), 1))
        xb = jnp.broadcast_to(xs, (len(grid), *xs.shape))
        values = layer.apply(variables, xb, us, method=joint)
        return jax.scipy.special.logsumexp(values, axis=0) + jnp.log(step)

    total = jnp.exp(log_marginal(grid[:, None])).sum() * step
    np.testing.assert_allclose(total, 1.0, atol=2e-3)
    exact = log_marginal(x)

    k = 2000
    keys = jax.random.split(jax.random.key(9), k)

    def elbo(key):
        z, c = layer.apply(variables, x, rngs={NOISE: key})
        return -0.5 * (z * z).sum(-1) - 0.5 * LOG_2PI + c

    draws = jax.jit(jax.vmap(elbo))(keys)  # (k, batch)
    mean_elbo = draws.mean(0)
    iwbo = jax.scipy.special.logsumexp(draws, axis=0) - math.log(k)
    assert bool(jnp.all(mean_elbo < exact - 1e-3)), (mean_elbo, exact)
    assert bool(jnp.all(iwbo > mean_elbo))  # the IWBO tightens the bound towards log p(x)
    np.testing.assert_allclose(iwbo, exact, atol=0.1)  # a one-run estimate: loose


def test_gradients_reach_the_posterior_the_prior_the_index_net_and_the_bijection():
    layer, variables, x, _, _ = _setup("vector_realnvp", batch=8)

    def loss(params):
        _, c = layer.apply({**variables, PARAMS: params}, x, rngs={NOISE: jax.random.key(2)})
        return -c.mean()

    grads = jax.jit(jax.grad(loss))(variables[PARAMS])
    assert set(grads) == {"posterior", "prior", "shift_scale", "bijection"}
    for name, tree in grads.items():
        norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(tree)]
        assert all(n > 0 for n in norms), (name, norms)


@pytest.mark.slow
def test_cif_model_starts_as_its_base_model_and_samples():
    flow = jm.cif((2,), layers=2, hidden=(8,), index_hidden=(4,), dtype=DTYPE)
    x = jax.random.normal(jax.random.key(0), (5, 2), DTYPE)
    variables = flow.init({PARAMS: jax.random.key(1), NOISE: jax.random.key(2)}, x)

    @jax.jit
    def run(key):
        lp = flow.apply(variables, x, method="log_prob", rngs={NOISE: key})
        return lp, flow.apply(variables, 7, method="sample", rngs={SAMPLE: key})

    (a, samples), (b, _) = run(jax.random.key(3)), run(jax.random.key(4))
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)  # q = p = N(0, I), s = t = 0: exact
    assert samples.shape == (7, 2) and samples.dtype == DTYPE
    assert flow.estimate == jb.Estimate.BOUND and flow.rng_streams == {NOISE, SAMPLE}


def test_random_index_init_makes_the_map_depend_on_the_index_from_the_start():
    x = jax.random.normal(jax.random.key(0), (4, 2), DTYPE)
    u = jnp.stack([jnp.zeros((4, 1), DTYPE), jnp.ones((4, 1), DTYPE)])

    def indexed_maps(zero_init):
        layer = jb.IndexedBijection(jb.ActNorm(), index_dims=1, hidden=(4,), zero_init=zero_init)
        variables = layer.init({PARAMS: jax.random.key(1), NOISE: jax.random.key(2)}, x)
        return layer.apply(variables, jnp.stack([x, x]), u,
                           method=lambda m, x, u: m.indexed_forward_and_log_det(x, u)[0])

    zero, random = indexed_maps(True), indexed_maps(False)
    np.testing.assert_array_equal(zero[0], zero[1])  # s = t = 0: F = f for every index
    assert not np.allclose(random[0], random[1])


@pytest.mark.slow
def test_cif_resflow_model_log_prob_iwbo_and_samples():
    flow = jm.cif((2,), base_model="resflow", layers=2, hidden=(8,), index_hidden=(4,),
                  logdet="exact", dtype=DTYPE)
    x = jax.random.normal(jax.random.key(0), (4, 2), DTYPE)
    variables = flow.init({PARAMS: jax.random.key(1), NOISE: jax.random.key(2)}, x)
    variables = _perturbed(variables, scale=0.05)

    @jax.jit
    def run(key):
        rngs = {NOISE: key}
        lp, _ = flow.apply(variables, x, method="log_prob", rngs=rngs, mutable=["lipschitz"])
        iw, _ = flow.apply(variables, x, 8, method="iwbo", rngs=rngs, mutable=["lipschitz"])
        return lp, iw, flow.apply(variables, 3, method="sample", rngs={SAMPLE: key})

    lp, iw, samples = run(jax.random.key(3))
    assert lp.shape == iw.shape == (4,) and bool(jnp.all(jnp.isfinite(iw)))
    assert samples.shape == (3, 2) and bool(jnp.all(jnp.isfinite(samples)))


def test_cif_rejects_bad_options():
    with pytest.raises(ConfigError, match="base_model"):
        jm.cif((2,), base_model="glow")
    with pytest.raises(ConfigError, match="layers"):
        jm.cif((2,), layers=0)
    with pytest.raises(ConfigError, match="vectors"):
        jm.cif((4, 4, 1))
    with pytest.raises(ConfigError, match="index_init"):
        jm.cif((2,), index_init="ones")
    with pytest.raises(ConfigError, match="index_dims"):
        jb.IndexedBijection(jb.ActNorm(), index_dims=0)
