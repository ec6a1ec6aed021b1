"""The Neumann-series gradient written out with explicit matrices, for one fixed key.

Statistical tests cannot see a small bias in the gradient (a missing roulette weight changes
it by less than the noise). Here the probe ``v`` and the drawn number of terms ``K`` are fixed
by the key, so the estimator's gradient must equal, to rounding, the exact expression

.. math::
    \\nabla (s^T J v), \\qquad s = \\sum_{k=0}^{K'} (-1)^k c_k (J^T)^k v \\text{ held constant},

with ``K' = K`` and the roulette weights ``c_k`` for a roulette tail, and ``K' = K - 1``,
``c_k = 1`` for the truncated series (so the gradient is that of the ``K``-term series whose
value is returned).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows.kernels import logdet_estimate
from jflows.kernels.logdet_series import logdet_estimate_with_info
from jflows.kernels.probes import sample_probe
from jflows.kernels.roulette import survival_prob

D, BATCH, E = 3, 4, 2


def branch_params(dtype):
    rng = np.random.default_rng(0)
    m = rng.standard_normal((D, D))
    m = 0.7 * m / np.linalg.norm(m, 2)
    return jnp.asarray(m, dtype), jnp.asarray(rng.standard_normal((BATCH, D)), dtype)


def make_g(kind):
    if kind == "linear":
        return lambda m: (lambda x: x @ m)
    return lambda m: (lambda x: 0.8 * jnp.tanh(x @ m + 0.3))


def weight(k, tail):
    """``c_k = 1 / P(N >= k - E)`` written out for the two laws (1 for ``k <= E``)."""
    if tail is None or k <= E:
        return 1.0
    if tail == "geometric":
        return 1.0 / 0.5 ** (k - E - 1)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    return 1.0 / float(survival_prob(jnp.asarray(k - E), "poisson", poisson_lam=2.0, dtype=dtype))


def key_with_terms(tail, at_least):
    """A key whose roulette draw gives at least ``at_least`` terms (deterministic search)."""
    for seed in range(200):
        key = jax.random.key(seed)
        _, _, info = logdet_estimate_with_info(
            lambda x: 0.5 * x, jnp.zeros((1, D)), key, 1, n_exact_terms=E, tail=tail
        )
        if int(info.n_terms) >= at_least:
            return key, int(info.n_terms)
    raise AssertionError("no key found")


def explicit_gradient(make, m, x, v, n_terms, tail, dtype):
    """Gradient of ``sum_b s_b^T J_b v_b`` with ``s_b`` constant, from dense Jacobians."""
    last = n_terms if tail is not None else n_terms - 1
    jac = jax.vmap(jax.jacfwd(make(m)))(x)  # (B, D, D), J[i, j] = d g_i / d x_j
    s = []
    for b in range(BATCH):
        jt = np.asarray(jac[b], np.float64).T
        vb = np.asarray(v[b], np.float64)
        s.append(sum((-1) ** k * weight(k, tail) * np.linalg.matrix_power(jt, k) @ vb
                     for k in range(last + 1)))
    s = jnp.asarray(np.stack(s), dtype)

    def surrogate(m_, x_):
        jac_ = jax.vmap(jax.jacfwd(make(m_)))(x_)
        return jnp.einsum("bi,bij,bj->", s, jac_, v)

    return jax.grad(surrogate, argnums=(0, 1))(m, x)


def explicit_value(make, m, x, v, n_terms, tail):
    jac = np.asarray(jax.vmap(jax.jacfwd(make(m)))(x), np.float64)
    out = []
    for b in range(BATCH):
        vb = np.asarray(v[b], np.float64)
        out.append(sum((-1) ** (k + 1) / k * weight(k, tail)
                       * vb @ np.linalg.matrix_power(jac[b], k) @ vb
                       for k in range(1, n_terms + 1)))
    return np.asarray(out)


# The fast loop runs a covering subset (each tail, each kind, remat on and off); the full
# suite runs all twelve combinations.
_FAST_NEUMANN = {("geometric", "nonlinear", True), ("poisson", "linear", False),
                 (None, "nonlinear", False), (None, "linear", True)}


@pytest.mark.float64
@pytest.mark.parametrize(("tail", "kind", "remat"), [
    pytest.param(t, k, r, marks=() if (t, k, r) in _FAST_NEUMANN else pytest.mark.slow)
    for t in ("geometric", "poisson", None) for k in ("linear", "nonlinear")
    for r in (True, False)])
def test_neumann_gradient_equals_the_explicit_formula(tail, kind, remat):
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    tol = 1e-10 if dtype == jnp.float64 else 2e-5
    m, x = branch_params(dtype)
    make = make_g(kind)
    key, n_terms = key_with_terms(tail, 5) if tail else (jax.random.key(3), E)
    v = sample_probe(jax.random.split(key)[1], x.shape, dtype)  # the kernel's own split

    def total(m_, x_):
        _, ld = logdet_estimate(make(m_), x_, key, 1, n_exact_terms=E, tail=tail,
                                remat_surrogate=remat)
        return ld.sum()

    _, ld = logdet_estimate(make(m), x, key, 1, n_exact_terms=E, tail=tail)
    np.testing.assert_allclose(ld, explicit_value(make, m, x, v, n_terms, tail), rtol=tol,
                               atol=tol)
    got = jax.grad(total, argnums=(0, 1))(m, x)
    want = explicit_gradient(make, m, x, v, n_terms, tail, dtype)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.float64
@pytest.mark.parametrize("remat", [True, False])
@pytest.mark.parametrize("n_terms", [1, 2, 5])
def test_truncated_series_gradient_is_the_gradient_of_its_value(n_terms, remat):
    """Scaling ``g`` by ``theta`` makes ``dJ/dtheta = J / theta`` commute with ``J``, so for a
    fixed probe the exact derivative of the ``K``-term value (backprop through the series)
    equals the Neumann estimator's gradient when both describe the same ``K``-term series."""
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    tol = 1e-10 if dtype == jnp.float64 else 2e-5
    m, x = branch_params(dtype)
    key = jax.random.key(7)

    def total(theta, gradient):
        g = lambda y: theta * jnp.tanh(y @ m)  # noqa: E731
        kw = dict(remat_surrogate=remat) if gradient == "neumann" else {}
        _, ld = logdet_estimate(g, x, key, 1, n_exact_terms=n_terms, gradient=gradient, **kw)
        return ld.sum()

    theta = jnp.asarray(0.9, dtype)
    np.testing.assert_allclose(total(theta, "neumann"), total(theta, "backprop"), rtol=tol)
    np.testing.assert_allclose(
        jax.grad(total)(theta, "neumann"), jax.grad(total)(theta, "backprop"), rtol=tol, atol=tol
    )
