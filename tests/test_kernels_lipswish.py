"""LipSwish's hand-written JVP agrees with autodiff of the plain expression to second order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows.kernels.lipschitz_nets import lipswish


def plain(x, beta_raw):
    beta = jax.nn.softplus(beta_raw)
    return x * jax.nn.sigmoid(beta * x) / 1.1


@pytest.fixture
def inputs():
    x = jax.random.normal(jax.random.key(0), (7, 5)) * 3.0
    return x, jnp.asarray(-0.4)


def test_value_and_first_derivatives(inputs):
    x, b = inputs
    np.testing.assert_allclose(lipswish(x, b), plain(x, b), rtol=1e-6, atol=1e-7)
    for argnums in (0, 1):
        for jac in (jax.jacfwd, jax.jacrev):
            np.testing.assert_allclose(
                jac(lipswish, argnums)(x, b), jac(plain, argnums)(x, b), rtol=1e-5, atol=1e-7
            )


def test_gradient_of_a_jvp_matches(inputs):
    """The Neumann surrogate differentiates a JVP: second derivatives must agree too."""
    x, b = inputs
    t = jnp.cos(x)

    def surrogate(f):
        def loss(x, b):
            _, tangent = jax.jvp(lambda y: f(y, b), (x,), (t,))
            return jnp.sum(jnp.sin(x) * tangent)

        return jax.grad(loss, argnums=(0, 1))(x, b)

    for got, want in zip(surrogate(lipswish), surrogate(plain)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_derivative_stays_in_the_lipschitz_band():
    x = jnp.linspace(-20.0, 20.0, 2001)
    for b in (-3.0, 0.5, 4.0):
        slope = jax.vmap(jax.grad(lipswish), (0, None))(x, jnp.asarray(b))
        assert float(slope.min()) >= -0.1 / 1.1 - 1e-6
        assert float(slope.max()) <= 1.0 + 1e-6
