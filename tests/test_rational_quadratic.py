"""The rational-quadratic spline kernel (Durkan et al. 2019) with identity tails.

Round trips, log-dets against autodiff, the tails, monotonicity, finite gradients at the
awkward points (huge inputs, knots, the bin edges ±B, extreme parameters), shapes and errors.
Exactness tests are marked ``float64`` and run again with ``JAX_ENABLE_X64=1``. The kernel is
called jitted, on inputs of one size ``N`` (hand-picked points padded with random ones), so the
file compiles each program once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows.errors import ConfigError, ShapeError
from jflows.kernels import (
    rq_spline_forward,
    rq_spline_inverse,
    rq_spline_knots,
    rq_spline_num_params,
)

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-10 if X64 else 1e-5  # round trip on well-conditioned splines
COND_TOL = 1e-12 if X64 else 1e-5  # round-trip error in x times the local slope dy/dx
LD_TOL = 1e-9 if X64 else 1e-4  # log-dets against autodiff

K = 5
P = rq_spline_num_params(K)
B = 3.0
N = 40 * (K + 1)  # the one input size: e.g. all knots of 40 splines


def _params(n, scale=0.5, seed=0):
    return scale * jax.random.normal(jax.random.key(seed), (n, P), DTYPE)


def _inputs(seed=1):
    """``N`` random inputs inside and outside [-B, B] (one in four in the tails)."""
    return jax.random.uniform(jax.random.key(seed), (N,), DTYPE, -4.0 / 3.0 * B, 4.0 / 3.0 * B)


def _one(params):
    """One spline's parameters for each of ``N`` inputs."""
    return jnp.broadcast_to(params, (N, P))


def _pad(points):
    """Hand-picked points first, then random inputs up to ``N``."""
    return jnp.concatenate([points.astype(DTYPE), _inputs(seed=9)[points.shape[0] :]])


fwd = jax.jit(lambda x, p: rq_spline_forward(x, p, B))
inv = jax.jit(lambda y, p: rq_spline_inverse(y, p, B))


def _slope(fn):
    """Elementwise derivative of ``fn``'s output by forward-mode autodiff (the map is diagonal)."""
    return jax.jit(lambda v, p: jax.jvp(lambda a: fn(a, p, B)[0], (v,), (jnp.ones_like(v),))[1])


fwd_slope, inv_slope = _slope(rq_spline_forward), _slope(rq_spline_inverse)
knots_of = jax.jit(lambda p: rq_spline_knots(p, B))


@pytest.mark.float64
def test_round_trip_random_inputs_with_tails():
    params, x = _params(N), _inputs()
    assert bool(jnp.any(jnp.abs(x) > B)) and bool(jnp.any(jnp.abs(x) < B))
    y, ld = fwd(x, params)
    assert y.dtype == DTYPE and ld.dtype == DTYPE
    x_back, _ = inv(y, params)
    np.testing.assert_allclose(x_back, x, atol=TOL, rtol=0)
    y_back, _ = fwd(inv(x, params)[0], params)
    np.testing.assert_allclose(y_back, x, atol=TOL, rtol=0)


@pytest.mark.float64
def test_round_trip_ill_conditioned_within_condition_number():
    params, x = _params(N, scale=3.0, seed=2), _inputs(seed=3)
    y, ld = fwd(x, params)
    assert float(ld.min()) < -8.0  # slopes below 1e-3.5: x is ill-determined by y
    x_back, _ = inv(y, params)
    err = jnp.abs(x_back - x) / (1.0 + jnp.exp(-ld))  # dx = dy / slope
    assert float(err.max()) < COND_TOL


@pytest.mark.float64
def test_knots_and_bin_edges_map_to_knots():
    n = N // (K + 1)
    knots = jax.tree.map(lambda a: a[:n], knots_of(_params(N)))
    params = _params(N)[:n]
    assert knots.x.shape == knots.y.shape == knots.derivatives.shape == (n, K + 1)
    ends = np.tile([-B, B], (n, 1))
    np.testing.assert_array_equal(knots.x[:, jnp.array([0, -1])], ends)
    np.testing.assert_array_equal(knots.y[:, jnp.array([0, -1])], ends)
    np.testing.assert_array_equal(knots.derivatives[:, jnp.array([0, -1])], ends**0)
    assert bool(jnp.all(jnp.diff(knots.x) > 0)) and bool(jnp.all(jnp.diff(knots.y) > 0))
    rows = jnp.repeat(params, K + 1, axis=0)  # every knot of every spline, flattened to N
    y, ld = fwd(knots.x.reshape(N), rows)
    np.testing.assert_allclose(y, knots.y.reshape(N), atol=TOL, rtol=0)
    np.testing.assert_allclose(ld, jnp.log(knots.derivatives).reshape(N), atol=LD_TOL, rtol=0)
    x, ld_inv = inv(knots.y.reshape(N), rows)
    np.testing.assert_allclose(x, knots.x.reshape(N), atol=TOL, rtol=0)
    np.testing.assert_allclose(ld_inv, -jnp.log(knots.derivatives).reshape(N), atol=LD_TOL)


@pytest.mark.float64
def test_log_det_equals_autodiff():
    params, x = _params(N, scale=1.0), _inputs()
    y, ld = fwd(x, params)
    np.testing.assert_allclose(ld, jnp.log(fwd_slope(x, params)), atol=LD_TOL)
    x_back, ld_inv = inv(y, params)
    np.testing.assert_allclose(ld_inv, jnp.log(inv_slope(y, params)), atol=LD_TOL)
    _, ld_at_back = fwd(x_back, params)
    np.testing.assert_allclose(ld_inv, -ld_at_back, atol=LD_TOL)


@pytest.mark.float64
def test_identity_tails_and_identity_at_zero_params():
    params = _one(_params(1)[0])
    tails = jnp.concatenate([-jnp.logspace(6, 0, N // 2), jnp.logspace(0, 6, N // 2)])
    tails = (jnp.sign(tails) * (B + 1e-3) + tails).astype(DTYPE)
    for fn in (fwd, inv):
        out, ld = fn(tails, params)
        np.testing.assert_array_equal(out, tails)
        np.testing.assert_array_equal(ld, jnp.zeros_like(tails))
    inside = jnp.linspace(-B, B, N, dtype=DTYPE)
    y, ld = fwd(inside, jnp.zeros((N, P), DTYPE))
    np.testing.assert_allclose(y, inside, atol=TOL)
    np.testing.assert_allclose(ld, 0.0, atol=TOL)


@pytest.mark.float64
def test_continuous_with_unit_slope_at_bounds():
    params = _one(_params(1, scale=1.0)[0])
    eps = 1e-5
    steps = eps * (jnp.arange(N // 2) - N // 4)  # crossing each bound
    x = jnp.concatenate([-B + steps, B + steps]).astype(DTYPE)
    y, ld = fwd(x, params)
    at_bounds = jnp.array([N // 4, 3 * N // 4])
    np.testing.assert_allclose(y[at_bounds], [-B, B], atol=TOL)
    np.testing.assert_allclose(ld[at_bounds], 0.0, atol=LD_TOL)
    slopes = jnp.delete(jnp.diff(y), N // 2 - 1) / jnp.delete(jnp.diff(x), N // 2 - 1)
    np.testing.assert_allclose(slopes, 1.0, atol=0.1 if X64 else 0.2)


def test_monotonic():
    params = jnp.broadcast_to(_params(1, scale=1.5)[0], (N, P))
    grid = jnp.linspace(-4.0, 4.0, N, dtype=DTYPE)
    y, ld = fwd(grid, params)
    assert bool(jnp.all(jnp.diff(y) > 0)) and bool(jnp.all(jnp.isfinite(ld)))
    x, _ = inv(grid, params)
    assert bool(jnp.all(jnp.diff(x) > 0))


EXTREME = {
    "plus50": jnp.full((P,), 50.0),
    "minus50": jnp.full((P,), -50.0),
    "alternating": jnp.where(jnp.arange(P) % 2 == 0, 50.0, -50.0),
    "mixed": 50.0 * jnp.sign(jax.random.normal(jax.random.key(7), (P,))),
}


def _sum_outputs(fn):
    return lambda v, p: sum(jnp.sum(out) for out in fn(v, p))


GRADS = {
    "fwd": (fwd, jax.jit(jax.grad(_sum_outputs(fwd), argnums=(0, 1)))),
    "inv": (inv, jax.jit(jax.grad(_sum_outputs(inv), argnums=(0, 1)))),
}


@pytest.mark.parametrize("direction", GRADS)
@pytest.mark.parametrize("kind", ["random", *EXTREME])
def test_gradients_finite_at_awkward_points(direction, kind):
    one = _params(1, scale=1.0)[0] if kind == "random" else EXTREME[kind].astype(DTYPE)
    knots = jax.tree.map(lambda a: a[0], knots_of(_one(one)))
    points = _pad(jnp.concatenate([
        jnp.array([-1e6, 1e6, -10.0, 10.0, -B - 1e-3, -B, B, 0.0]),  # tails first
        knots.x, knots.y, knots.x[1:-1] + 1e-6,
    ]))
    fn, grad = GRADS[direction]
    out, ld = fn(points, _one(one))
    assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(jnp.isfinite(ld)))
    gx, gp = grad(points, _one(one))
    assert bool(jnp.all(jnp.isfinite(gx))), (kind, points[~jnp.isfinite(gx)])
    assert bool(jnp.all(jnp.isfinite(gp))), kind
    np.testing.assert_array_equal(gx[:5], 1.0)  # identity tails: dy/dx = 1, no log-det term
    np.testing.assert_array_equal(gp[:5], 0.0)  # ... and no dependence on the parameters


@pytest.mark.float64
def test_parameter_gradients_match_finite_differences():
    params = _params(N, scale=1.0, seed=4)
    knots = knots_of(params)
    rows, bins = jnp.arange(N), jnp.arange(N) % K
    # Mid-bin points: the log-det is not differentiable where a knot crosses the input.
    x = (knots.x[rows, bins] + knots.x[rows, bins + 1]) / 2
    eps, tol = (1e-6, 1e-6) if X64 else (1e-3, 1e-2)
    for fn, grad in GRADS.values():
        _, gp = grad(x, params)
        direction = jax.random.normal(jax.random.key(5), params.shape, DTYPE)
        loss = _sum_outputs(fn)
        numeric = (loss(x, params + eps * direction) - loss(x, params - eps * direction)) / (
            2 * eps
        )
        np.testing.assert_allclose(jnp.sum(gp * direction), numeric, rtol=tol, atol=tol)


def test_leading_batch_axes_and_broadcast():
    params = _params(N).reshape(12, N // 12, P)
    x = _inputs().reshape(12, N // 12)
    y, ld = fwd(x, params)
    assert y.shape == ld.shape == (12, N // 12)
    np.testing.assert_array_equal(y.reshape(N), fwd(x.reshape(N), params.reshape(N, P))[0])
    shared = params[0, 0]
    y_shared, _ = fwd(x.reshape(N), shared)  # params without batch axes broadcast
    np.testing.assert_array_equal(y_shared, fwd(x.reshape(N), _one(shared))[0])
    x_back, ld_inv = inv(y, params)
    assert x_back.shape == ld_inv.shape == (12, N // 12)


def test_bad_arguments_raise_with_value_and_fix():
    x = jnp.zeros(4)
    with pytest.raises(ShapeError, match=r"3K - 1.*\(4, 22\).*rq_spline_num_params"):
        rq_spline_forward(x, jnp.zeros((4, 22)))
    with pytest.raises(ShapeError, match="3K - 1"):
        rq_spline_inverse(x, jnp.zeros(()))
    with pytest.raises(ShapeError, match=r"\(4,\).*\(5,\)"):
        rq_spline_forward(x, jnp.zeros((5, P)))
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match=rf"bound.*{bad}.*pass e.g. 3.0"):
            rq_spline_forward(x, jnp.zeros((4, P)), bound=bad)
    with pytest.raises(ConfigError, match=r"bound must be a Python number"):
        jax.jit(rq_spline_forward)(x, jnp.zeros((4, P)), jnp.array(3.0))
    with pytest.raises(ConfigError, match=rf"min_bin_width.*K={K}.*0.3"):
        rq_spline_forward(x, jnp.zeros((4, P)), min_bin_width=0.3)
    with pytest.raises(ConfigError, match=r"min_bin_height.*0.0"):
        rq_spline_inverse(x, jnp.zeros((4, P)), min_bin_height=0.0)
    with pytest.raises(ConfigError, match=r"min_derivative.*1.5"):
        rq_spline_forward(x, jnp.zeros((4, P)), min_derivative=1.5)
    with pytest.raises(ConfigError, match=r"num_bins.*0"):
        rq_spline_num_params(0)
