"""Spectral normalisation kernels: power iteration (dense, conv), coefficients, induced norms."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randn

from jflows.errors import ConfigError
from jflows.kernels import (
    CLOSED_FORM_PAIRS,
    check_coeff,
    conv_operator,
    conv_output_shape,
    dense_operator,
    induced_norm_closed_form,
    induced_power_iteration,
    lipschitz_scale,
    normalize_codomain,
    normalize_domain,
    power_iteration,
    power_iteration_adaptive,
    spectral_normalize,
)

INF = math.inf


def explicit_matrix(matvec, input_shape):
    """The operator as a matrix (output size, input size), built by jacfwd."""
    size = math.prod(input_shape)
    return jax.jit(jax.jacfwd(lambda v: matvec(v.reshape(input_shape)).ravel()))(jnp.zeros(size))


# ----------------------------------------------------------------------- dense


def test_dense_power_iteration_matches_svd_and_gradient():
    w = randn(0, (6, 4))  # (in, out), y = x @ w
    u0, v0 = jnp.ones(4), jnp.ones(6)

    @jax.jit
    def run(w):
        u, v, sigma = power_iteration(*dense_operator(w), u0, v0, 200)
        grad = jax.grad(lambda w: power_iteration(*dense_operator(w), u0, v0, 200)[2])(w)
        return u, v, sigma, grad

    u, v, sigma, grad = run(w)
    assert u.shape == (4,)
    assert v.shape == (6,)
    left, svals, right_t = jnp.linalg.svd(w)
    np.testing.assert_allclose(sigma, svals[0], rtol=1e-5)
    # Input side of x -> x @ w: first column of `left`; output side: `right_t[0]`.
    np.testing.assert_allclose(jnp.abs(v @ left[:, 0]), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.abs(u @ right_t[0]), 1.0, rtol=1e-5)
    # d sigma / d w = v u^T with the vectors held fixed, equal to the SVD derivative at the top.
    np.testing.assert_allclose(grad, jnp.outer(v, u), atol=1e-6)
    np.testing.assert_allclose(
        grad,
        jnp.outer(left[:, 0], right_t[0]) * jnp.sign(v @ left[:, 0]) * jnp.sign(u @ right_t[0]),
        atol=1e-4,
    )


def test_adaptive_power_iteration_stops_and_warm_starts():
    w = randn(1, (5, 5))
    mv, rmv = dense_operator(w)
    run = jax.jit(lambda u, v: power_iteration_adaptive(mv, rmv, u, v, atol=1e-5, rtol=1e-5))
    u, v, sigma, n_cold = run(jnp.ones(5), jnp.ones(5))
    np.testing.assert_allclose(sigma, jnp.linalg.norm(w, 2), rtol=1e-4)
    assert 1 < int(n_cold) < 200
    _, _, sigma_warm, n_warm = run(u, v)
    assert int(n_warm) <= 2 < int(n_cold)
    np.testing.assert_allclose(sigma_warm, sigma, rtol=1e-5)
    _, _, _, capped = power_iteration_adaptive(
        mv, rmv, jnp.ones(5), jnp.ones(5), atol=0.0, rtol=0.0, max_iter=7
    )
    assert int(capped) == 7


def test_zero_iterations_only_evaluate_sigma_and_eps_guards_zero():
    w = jnp.zeros((3, 2))
    u, v, sigma = power_iteration(*dense_operator(w), jnp.ones(2), jnp.ones(3), 3)
    assert bool(jnp.all(jnp.isfinite(u)))
    assert bool(jnp.all(jnp.isfinite(v)))
    assert float(sigma) == 0.0
    w = jnp.arange(6.0).reshape(3, 2)
    _, _, s0 = power_iteration(
        *dense_operator(w), jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0, 0.0]), 0
    )
    assert float(s0) == float(w[1, 0])


# ------------------------------------------------------------------------ conv


@pytest.mark.parametrize(
    ("padding", "strides", "kernel_hw"),
    [
        ("SAME", (1, 1), (3, 3)),
        ("VALID", (1, 1), (3, 3)),
        (((1, 0), (2, 1)), (2, 1), (3, 2)),
        ("SAME", (1, 1), (1, 1)),
    ],
)
def test_conv_operator_norm_matches_explicit_svd(padding, strides, kernel_hw):
    kernel = randn(2, (*kernel_hw, 2, 3))
    in_shape = (5, 5, 2)
    out_shape = conv_output_shape(kernel.shape, in_shape, padding, strides)
    mv, rmv = conv_operator(kernel, in_shape, padding, strides)

    @jax.jit
    def run(kernel, u0, v0):
        mv, rmv = conv_operator(kernel, in_shape, padding, strides)
        return power_iteration_adaptive(mv, rmv, u0, v0, atol=1e-7, rtol=1e-7, max_iter=2000)

    u0 = randn(3, out_shape)
    v0 = randn(4, in_shape)
    u, v, sigma, _ = run(kernel, u0, v0)
    assert u.shape == out_shape
    assert v.shape == in_shape
    mat = explicit_matrix(mv, in_shape)
    np.testing.assert_allclose(sigma, jnp.linalg.norm(mat, 2), rtol=1e-4)
    # The transpose is exact.
    np.testing.assert_allclose(rmv(u0).ravel(), mat.T @ u0.ravel(), rtol=1e-5, atol=1e-5)
    if kernel_hw == (1, 1):  # a 1x1 conv has the norm of its channel matrix at any size
        np.testing.assert_allclose(sigma, jnp.linalg.norm(kernel[0, 0], 2), rtol=1e-4)


# -------------------------------------------------------------- normalisation


def test_lipschitz_scale_and_spectral_normalize():
    w = jnp.ones((2, 2))
    np.testing.assert_allclose(lipschitz_scale(jnp.asarray(0.5), 0.9), 1.0)
    np.testing.assert_allclose(lipschitz_scale(jnp.asarray(1.8), 0.9), 2.0)
    np.testing.assert_allclose(spectral_normalize(w, jnp.asarray(1.8), 0.9), w / 2.0)
    np.testing.assert_allclose(spectral_normalize(w, jnp.asarray(0.3), 0.9), w)
    normed = spectral_normalize(w, jnp.linalg.norm(w, 2), 0.9)
    np.testing.assert_allclose(jnp.linalg.norm(normed, 2), 0.9, rtol=1e-6)


@pytest.mark.parametrize("coeff", [1.0, 1.2, 0.0, -0.5])
def test_bad_coefficients_raise(coeff):
    with pytest.raises(ConfigError, match="coeff"):
        check_coeff(coeff)
    with pytest.raises(ConfigError, match="coeff"):
        spectral_normalize(jnp.ones(2), jnp.asarray(1.0), coeff)


# ----------------------------------------------------------------- induced norms


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def brute_force_norm(w, p, q, n_angles=200_001):
    """||A||_{p->q} for A = w^T with a 2-D input space, by a dense sweep of the unit p-sphere."""
    theta = jnp.linspace(0.0, math.pi, n_angles)
    v = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    v = v / jnp.linalg.norm(v, ord=p, axis=1, keepdims=True)
    return jnp.max(jnp.linalg.norm(v @ w, ord=q, axis=1))


@pytest.mark.parametrize("pair", CLOSED_FORM_PAIRS)
def test_closed_forms_match_brute_force(pair):
    w = randn(5, (2, 3))
    np.testing.assert_allclose(
        induced_norm_closed_form(w, *pair), brute_force_norm(w, *pair), rtol=1e-6
    )


@pytest.mark.parametrize(
    "pair", [(2.0, 2.0), (3.0, 1.5), (1.5, 3.0), (2.0, 1.0), (INF, 2.0), *CLOSED_FORM_PAIRS]
)
def test_generalised_power_method_matches_brute_force(pair):
    p, q = pair
    w = randn(6, (2, 3))
    mv, rmv = dense_operator(w)

    @jax.jit
    def best_of_restarts(keys):
        def one(key):
            v0 = jax.random.normal(key, (2,))
            return induced_power_iteration(mv, rmv, jnp.ones(3), v0, p, q, 100)[2]

        return jnp.max(jax.vmap(one)(keys))

    sigma = best_of_restarts(jax.random.split(jax.random.key(7), 8))
    np.testing.assert_allclose(sigma, brute_force_norm(w, p, q), rtol=1e-4)
    if pair == (2.0, 2.0):
        np.testing.assert_allclose(sigma, jnp.linalg.norm(w, 2), rtol=1e-5)


@pytest.mark.parametrize("order", [1.0, 1.5, 2.0, 3.0, INF])
def test_normalisers_attain_the_dual_norms(order):
    a = jnp.array([0.5, -2.0, 0.0, 1.0])
    dual = INF if order == 1.0 else (1.0 if order == INF else order / (order - 1.0))
    x = normalize_domain(a, order)  # unit l_p vector maximising <a, x> = ||a||_{p*}
    np.testing.assert_allclose(jnp.linalg.norm(x, ord=order), 1.0, rtol=1e-6)
    np.testing.assert_allclose(a @ x, jnp.linalg.norm(a, ord=dual), rtol=1e-6)
    y = normalize_codomain(a, order)  # unit l_{q*} vector with <a, y> = ||a||_q
    np.testing.assert_allclose(jnp.linalg.norm(y, ord=dual), 1.0, rtol=1e-6)
    np.testing.assert_allclose(a @ y, jnp.linalg.norm(a, ord=order), rtol=1e-6)


def test_conv_closed_forms_equal_explicit_operator_for_interior_pixels():
    kernel = randn(8, (3, 3, 2, 3))
    mat = explicit_matrix(conv_operator(kernel, (5, 5, 2))[0], (5, 5, 2))
    for pair in CLOSED_FORM_PAIRS:
        # `mat` is A (out, in); as a dense kernel (in, out) it is mat.T.
        np.testing.assert_allclose(
            induced_norm_closed_form(kernel, *pair),
            induced_norm_closed_form(mat.T, *pair),
            rtol=1e-5,
        )


def test_unknown_pairs_and_orders_raise():
    with pytest.raises(ConfigError, match="closed form"):
        induced_norm_closed_form(jnp.ones((2, 2)), 3, 3)
    with pytest.raises(ConfigError, match="norm order"):
        induced_power_iteration(
            *dense_operator(jnp.ones((2, 2))), jnp.ones(2), jnp.ones(2), 0.5, 2, 3
        )
