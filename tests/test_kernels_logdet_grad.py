"""Gradients of the log-det series: Neumann estimator, backprop, per-example weights, remat."""

import functools
import math

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import contractive_mlp, lipswish, randn, z_threshold
from jax.flatten_util import ravel_pytree

from jflows.kernels import event_jacobians, logdet_estimate, logdet_exact, power_series_terms

N_KEYS = 16384


def mlp(params):
    return helpers.mlp(params, activation=lipswish)


def total_estimate(params, x, key, **kw):
    return logdet_estimate(mlp(params), x, key, x.ndim - 1, **kw)[1].sum()


def flat_grads(grads):
    return ravel_pytree(grads)[0]


@pytest.mark.parametrize("tail", ["poisson", "geometric"])
def test_neumann_gradient_is_unbiased(tail):
    params = contractive_mlp(1, 3, 12, 0.6)
    x = randn(2, (2, 3))
    kw = {"n_exact_terms": 2, "tail": tail}

    @jax.jit
    def sample_grads(keys):
        grad_fn = jax.grad(functools.partial(total_estimate, **kw), argnums=(0, 1))
        return jax.vmap(lambda k: flat_grads(grad_fn(params, x, k)))(keys)

    @jax.jit
    def exact_grads():
        fn = lambda p, x: logdet_exact(mlp(p), x, 1)[1].sum()  # noqa: E731
        trunc = lambda p, x: power_series_terms(event_jacobians(mlp(p), x, 1)[1], 2).sum()  # noqa: E731
        return [flat_grads(jax.grad(f, argnums=(0, 1))(params, x)) for f in (fn, trunc)]

    grads = sample_grads(jax.random.split(jax.random.key(3), N_KEYS))
    exact, truncated = exact_grads()
    se = grads.std(0) / math.sqrt(N_KEYS)
    z = jnp.abs(grads.mean(0) - exact) / se
    thr = z_threshold(z.size)
    assert float(z.max()) < thr, (float(z.max()), thr)
    # Power: the gradient of the biased 2-term truncation is rejected.
    assert float(jnp.max(jnp.abs(grads.mean(0) - truncated) / se)) > thr


def test_returned_value_is_the_plain_estimate():
    params = contractive_mlp(4, 3, 12, 0.6)
    x = randn(5, (4, 3))
    key = jax.random.key(6)

    @jax.jit
    def both():
        kw = {"n_exact_terms": 2, "tail": "poisson"}
        value, _ = jax.value_and_grad(total_estimate)(params, x, key, **kw)
        plain = total_estimate(params, x, key, gradient="none", **kw)
        zero = jax.grad(total_estimate)(params, x, key, gradient="none", **kw)
        return value, plain, flat_grads(zero)

    value, plain, zero = both()
    np.testing.assert_allclose(value, plain, rtol=1e-6)
    np.testing.assert_array_equal(zero, jnp.zeros_like(zero))


@pytest.mark.parametrize("remat", [False, True])
def test_per_example_weights_are_respected(remat):
    params = contractive_mlp(7, 3, 12, 0.6)
    x = randn(8, (5, 3))
    weights = jnp.array([1.0, -2.0, 0.5, 0.0, 3.0])
    key = jax.random.key(9)
    kw = {"n_exact_terms": 2, "tail": "geometric", "remat_surrogate": remat}

    def per_example(p, x):
        gx, ld = logdet_estimate(mlp(p), x, key, 1, **kw)
        return ld + 0.1 * gx.sum(-1)  # the path through g(x) is kept too

    @jax.jit
    def compare():
        weighted = jax.grad(lambda p, x: weights @ per_example(p, x), argnums=(0, 1))(params, x)
        jac_p, jac_x = jax.jacrev(per_example, argnums=(0, 1))(params, x)
        contract = lambda j: jnp.tensordot(weights, j, axes=1)  # noqa: E731
        return flat_grads(weighted), flat_grads((jax.tree.map(contract, jac_p), contract(jac_x)))

    got, want = compare()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_remat_gives_the_same_gradients():
    params = contractive_mlp(10, 2, 2, 0.6)
    x = randn(11, (2, 3, 3, 2))  # images; g acts per pixel
    key = jax.random.key(12)

    @jax.jit
    def grads():
        out = []
        for remat in (False, True):
            kw = {"n_exact_terms": 3, "tail": "poisson", "remat_surrogate": remat}
            out.append(flat_grads(jax.grad(total_estimate, argnums=(0, 1))(params, x, key, **kw)))
        return out

    plain, remat = grads()
    np.testing.assert_allclose(plain, remat, rtol=1e-5, atol=1e-7)


def test_plain_surrogate_goes_through_forward_mode_and_matches_the_custom_vjp():
    params = contractive_mlp(17, 3, 10, 0.6)
    x = randn(18, (4, 3))
    key = jax.random.key(19)

    def per_example(x, remat):
        kw = {"n_exact_terms": 2, "tail": "geometric", "remat_surrogate": remat}
        return logdet_estimate(mlp(params), x, key, 1, **kw)[1]

    @jax.jit
    def jacobians():
        forward = jax.jacfwd(functools.partial(per_example, remat=False))(x)
        reverse = jax.jacrev(functools.partial(per_example, remat=True))(x)
        return forward, reverse

    forward, reverse = jacobians()
    assert float(jnp.abs(forward).max()) > 1e-3  # the surrogate's x-gradient is not trivial
    np.testing.assert_allclose(forward, reverse, rtol=1e-5, atol=1e-6)


def test_custom_vjp_surrogate_refuses_forward_mode_loudly():
    params = contractive_mlp(20, 2, 6, 0.6)
    x = randn(21, (3, 2))
    kw = {"n_exact_terms": 2, "tail": "geometric", "remat_surrogate": True}
    fn = lambda x: logdet_estimate(mlp(params), x, jax.random.key(0), 1, **kw)[1]  # noqa: E731
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(fn)(x)


def test_backprop_gradient_matches_finite_differences_in_float64():
    with jax.enable_x64(True):
        params = contractive_mlp(13, 3, 8, 0.6, jnp.float64)
        x = randn(14, (2, 3), jnp.float64)
        key = jax.random.key(15)
        flat, unravel = ravel_pytree(params)
        direction = randn(16, flat.shape, jnp.float64)

        @jax.jit
        def check():
            fn = lambda f: total_estimate(  # noqa: E731
                unravel(f), x, key, n_exact_terms=4, gradient="backprop"
            )
            eps = 1e-5
            fd = (fn(flat + eps * direction) - fn(flat - eps * direction)) / (2 * eps)
            return jax.grad(fn)(flat) @ direction, fd

        ad, fd = check()
        np.testing.assert_allclose(ad, fd, rtol=1e-7)
