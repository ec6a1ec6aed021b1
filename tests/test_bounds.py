"""The ELBO and the importance-weighted bound (IWBO) of a flow with a stochastic layer.

A closed-form case: ``Flow(Augment, StandardNormal((D + A,)), (D,))`` with a known
``q(a | x) = N(m, s^2)`` (set through the parameters). The model's marginal density is exactly
``log N(x; 0, I)`` (the augmented entries integrate out), its ELBO is
``log N(x; 0, I) - KL(N(m, s^2) || N(0, 1))``, and ``E[IWBO_K]`` rises with ``K`` towards
``log N(x; 0, I)`` (Burda et al. 2016). Monte Carlo figures are tested within 4 standard
errors, with seeded keys, all draws of one figure in one jitted ``vmap`` over keys.
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
from jflows.bijectors import Estimate
from jflows.errors import ConfigError
from jflows.names import NOISE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-10 if X64 else 2e-5

D, A = 2, 2
MEAN, RAW_LOG_SCALE = np.array([1.0, -0.8]), np.array([-0.3, 0.3])
SCALE = np.exp(5.0 * np.tanh(RAW_LOG_SCALE / 5.0))  # bounded_log_scale
KL = float(np.sum(-np.log(SCALE) + (SCALE**2 + MEAN**2) / 2 - 0.5))
X = np.array([[0.3, -1.2], [1.5, 0.4]])
EXACT = norm.logpdf(X).sum(-1)  # log N(x; 0, I), the model's exact marginal density


@pytest.fixture(scope="module")
def augmented():
    """The flow and its variables, with q(a | x) = N(MEAN, SCALE^2) (independent of x)."""
    flow = jm.Flow(jb.Chain([jb.Augment(features=A, hidden=(8,))]),
                   jm.StandardNormal((D + A,), dtype=DTYPE), (D,), dtype=DTYPE)
    x = jnp.asarray(X, DTYPE)
    variables = flow.init({"params": jax.random.key(0), NOISE: jax.random.key(1)}, x,
                          method="log_prob")
    params = jax.tree.map(lambda v: v, variables["params"])
    net = params["bijector"]["bijectors_0"]["density"]["net"]
    last = max(net, key=lambda name: int(name.rsplit("_", 1)[-1]))
    net[last] = {"kernel": jnp.zeros_like(net[last]["kernel"]),
                 "bias": jnp.asarray(np.concatenate([MEAN, RAW_LOG_SCALE]), DTYPE)}
    return flow, {"params": params}, x


def _draws(flow, variables, x, method, n, seed, *args):
    """``n`` values of ``method`` with independent noise keys (one jitted vmap), float64."""
    keys = jax.random.split(jax.random.key(seed), n)
    fn = jax.jit(jax.vmap(lambda k: flow.apply(variables, x, *args, method=method,
                                               rngs={NOISE: k})))
    return np.asarray(fn(keys), np.float64)


def _mean_and_stderr(values):
    return values.mean(0), values.std(0) / math.sqrt(len(values))


def test_the_elbo_is_below_the_exact_log_likelihood_by_the_closed_form_kl(augmented):
    flow, variables, x = augmented
    assert flow.estimate == Estimate.BOUND
    mean, stderr = _mean_and_stderr(_draws(flow, variables, x, "log_prob", 4000, 2))
    assert np.all(mean + 4 * stderr < EXACT)  # a lower bound, strictly (KL > 0)
    assert np.all(np.abs((EXACT - mean) - KL) < 4 * stderr + 1e-5)


def test_the_iwbo_rises_with_k_and_stays_below_the_exact_log_likelihood(augmented):
    flow, variables, x = augmented
    stats = {k: _mean_and_stderr(_draws(flow, variables, x, "iwbo", 2000, 10 + k, k))
             for k in (1, 4, 16, 64)}
    for small, large in ((1, 4), (4, 16), (16, 64)):
        (m1, s1), (m2, s2) = stats[small], stats[large]
        assert np.all(m2 - m1 > 4 * np.hypot(s1, s2)), (small, large, m1, m2)
    mean, stderr = stats[64]
    assert np.all(mean + 4 * stderr < EXACT)
    np.testing.assert_allclose(stats[1][0], EXACT - KL, atol=4 * float(stats[1][1].max()))


@pytest.mark.float64
def test_the_iwbo_is_the_log_mean_exp_of_k_elbo_draws_made_in_one_batch(augmented):
    """iwbo(x, K) draws the K copies as one (K, batch) call: log_prob of the tiled batch with
    the same key gives its K ELBO draws."""
    flow, variables, x = augmented
    key, k = jax.random.key(3), 5
    iwbo = flow.apply(variables, x, k, method="iwbo", rngs={NOISE: key})
    tiled = jnp.broadcast_to(x, (k, *x.shape))
    elbos = np.asarray(flow.apply(variables, tiled, method="log_prob", rngs={NOISE: key}),
                       np.float64)
    assert len({tuple(row) for row in elbos}) == k  # K different draws
    expected = np.log(np.mean(np.exp(elbos), axis=0))
    np.testing.assert_allclose(iwbo, expected, rtol=TOL, atol=TOL)
    one = flow.apply(variables, x, 1, method="iwbo", rngs={NOISE: key})
    np.testing.assert_array_equal(one, flow.apply(variables, x, method="log_prob",
                                                  rngs={NOISE: key}))


@pytest.mark.float64
def test_the_bounds_are_repeatable_for_a_fixed_key_and_differ_for_another(augmented):
    flow, variables, x = augmented

    def value(samples, seed):
        return flow.apply(variables, x, samples, method="iwbo", rngs={NOISE: jax.random.key(seed)})

    for samples in (1, 16):
        np.testing.assert_array_equal(value(samples, 4), value(samples, 4))
        assert np.all(np.asarray(value(samples, 4)) != np.asarray(value(samples, 5)))
        jitted = jax.jit(lambda s: value(samples, s))  # noqa: B023 (called in the loop)
        np.testing.assert_allclose(jitted(4), value(samples, 4), rtol=10 * TOL, atol=10 * TOL)


def test_log_likelihood_says_what_its_value_is(augmented):
    flow, variables, x = augmented
    rngs = {NOISE: jax.random.key(6)}
    elbo = flow.apply(variables, x, method="log_likelihood", rngs=rngs)
    assert (elbo.name, elbo.estimate, elbo.samples, elbo.is_bound) == (
        "ELBO", Estimate.BOUND, 1, True)
    np.testing.assert_array_equal(elbo.value, flow.apply(variables, x, method="log_prob",
                                                         rngs=rngs))
    iw = flow.apply(variables, x, 16, method="log_likelihood", rngs=rngs)
    assert (iw.name, iw.estimate, iw.samples) == ("IWBO (K=16)", Estimate.BOUND, 16)
    np.testing.assert_array_equal(iw.value, flow.apply(variables, x, 16, method="iwbo",
                                                       rngs=rngs))

    exact_models = {
        "realnvp": jm.realnvp(event_shape=(D,), n_couplings=2, hidden=(8,)),
        "slice": jm.Flow(jb.Slice(keep=1, hidden=(8,)), jm.StandardNormal((1,)), (D,)),
    }
    for name, model in exact_models.items():
        model_vars = model.init(jax.random.key(7), x, method="log_prob")
        for samples in (1, 16):
            result = model.apply(model_vars, x, samples, method="log_likelihood")
            assert (result.name, result.estimate, result.samples) == (
                "exact log-likelihood", Estimate.EXACT, 1), (name, samples)
            np.testing.assert_array_equal(
                result.value, model.apply(model_vars, x, method="log_prob"))


@pytest.mark.parametrize("samples", [0, -3, 2.0, True, None])
def test_iwbo_rejects_a_sample_count_that_is_not_a_positive_int(augmented, samples):
    flow, variables, x = augmented
    with pytest.raises(ConfigError, match=f"samples = K >= 1.*got {samples!r}"):
        flow.apply(variables, x, samples, method="iwbo", rngs={NOISE: jax.random.key(0)})
