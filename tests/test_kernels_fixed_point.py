"""Fixed-point inverse of a residual map: convergence, reporting, implicit gradients."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import contractive_mlp, mlp, randn

from jflows.errors import ConfigError
from jflows.kernels import FixedPointInfo, banach_iterations, fixed_point_inverse


@pytest.mark.parametrize("lip", [0.6, 0.9])
def test_converges_within_banach_bound(lip):
    params = contractive_mlp(0, 4, 16, lip, aligned=False)
    g = mlp(params)
    y = 2.0 * randn(1, (8, 4))
    x, info = jax.jit(lambda y: fixed_point_inverse(g, y, atol=1e-5, rtol=1e-5))(y)
    assert isinstance(info, FixedPointInfo)
    assert bool(info.converged)
    first_step = float(jnp.max(jnp.linalg.norm(g(y), axis=-1)))  # ||x1 - x0|| per event
    bound = int(banach_iterations(lip, first_step, 1e-5))
    assert 1 <= int(info.iterations) <= bound, (int(info.iterations), bound)
    np.testing.assert_allclose(x + g(x), y, atol=1e-4)
    assert float(info.residual) == pytest.approx(float(jnp.max(jnp.abs(x + g(x) - y))), abs=1e-6)
    assert float(info.residual) < 1e-4


def test_reports_non_convergence():
    y = jnp.linspace(-1.0, 1.0, 6).reshape(3, 2)
    g = lambda x: -1.5 * x + 0.1 * jnp.sin(x)  # noqa: E731  (Lip about 1.6: iteration diverges)
    x, info = fixed_point_inverse(g, y, max_iter=25)
    assert not bool(info.converged)
    assert int(info.iterations) == 25
    assert not float(info.residual) < 1e-3


def test_single_event_and_vmap_agree():
    params = contractive_mlp(2, 3, 8, 0.8, aligned=False)
    g = mlp(params)
    y = randn(3, (5, 3))
    batched, _ = fixed_point_inverse(g, y, atol=1e-6, rtol=0.0)
    mapped, infos = jax.vmap(lambda e: fixed_point_inverse(g, e, atol=1e-6, rtol=0.0))(y)
    np.testing.assert_allclose(batched, mapped, atol=1e-5)
    assert infos.iterations.shape == (5,)
    assert bool(jnp.all(infos.converged))


def test_implicit_gradients_match_finite_differences_in_float64():
    with jax.enable_x64(True):
        params = contractive_mlp(4, 3, 8, 0.8, jnp.float64, aligned=False)
        y = randn(5, (2, 3), jnp.float64)
        cot = randn(6, (2, 3), jnp.float64)
        d_params = jax.tree.map(lambda p: jnp.cos(p + 1.0), params)
        d_y = jnp.sin(3.0 * y)

        def loss(p, y):
            x, _ = fixed_point_inverse(mlp(p), y, atol=1e-14, rtol=0.0, max_iter=500)
            return jnp.sum(cot * x)

        @jax.jit
        def check(p, y):
            gp, gy = jax.grad(loss, argnums=(0, 1))(p, y)
            ad = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(d_params)))
            ad = ad + jnp.vdot(gy, d_y)
            eps = 1e-6
            shift = lambda s: jax.tree.map(lambda a, b: a + s * b, p, d_params)  # noqa: E731
            fd = (loss(shift(eps), y + eps * d_y) - loss(shift(-eps), y - eps * d_y)) / (2 * eps)
            return ad, fd, gy

        ad, fd, gy = check(params, y)
        np.testing.assert_allclose(ad, fd, rtol=1e-6)
        # dx/dy = (I + J)^{-1}, so ybar = (I + J)^{-T} xbar.
        x, _ = fixed_point_inverse(mlp(params), y, atol=1e-14, rtol=0.0, max_iter=500)
        jac = jax.vmap(jax.jacfwd(lambda e: mlp(params)(e[None])[0]))(x)
        want = jnp.linalg.solve(jnp.eye(3) + jnp.swapaxes(jac, 1, 2), cot[..., None])[..., 0]
        np.testing.assert_allclose(gy, want, rtol=1e-9)


def test_banach_iterations_formula():
    assert int(banach_iterations(0.5, 1.0, 1e-3)) == 11  # 0.5^11 / 0.5 < 1e-3 <= 0.5^10 / 0.5
    assert int(banach_iterations(0.9, 1e-9, 1e-3)) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"atol": -1.0}, "tolerance"),
        ({"atol": 0.0, "rtol": 0.0}, "tolerance"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fixed_point_inverse(jnp.tanh, jnp.ones(2), **kwargs)
