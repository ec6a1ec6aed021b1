"""Direct tests of small building blocks: conditional densities and result records.

- :class:`~jflows.bijectors.ConditionalGaussian` and :class:`~jflows.bijectors.ConditionalBernoulli`
  against the closed-form normal and Bernoulli log densities, computed independently with
  numpy/scipy from the raw outputs of the network (whatever its weights), for vectors
  (``event_ndims=1``) and images (``event_ndims=3``); their starting densities; sampling.
- :class:`~jflows.models.LogLikelihood` as returned by ``Flow.log_likelihood``.
- ``MapLipschitz.of`` and ``LipschitzReport.figures()`` against numpy's maximum and quantiles.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jflows import bijectors as jb
from jflows import models as jm
from jflows.bijectors import ConditionalBernoulli, ConditionalGaussian, Estimate
from jflows.bijectors.densities import LOG_SCALE_BOUND, bounded_log_scale
from jflows.errors import ConfigError
from jflows.models.lipschitz_report import LipschitzReport, MapLipschitz
from jflows.names import NOISE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-10 if X64 else 2e-5

# (event_ndims, conditioning shape, features of the modelled array, hidden)
SHAPES = {
    1: ((5, 3), 2, (8,)),
    3: ((2, 4, 4, 3), 2, 4),
}


def _arrays(event_ndims, seed=0):
    """A conditioning array and a Gaussian ``y`` of matching batch (and height, width)."""
    c_shape, features, _ = SHAPES[event_ndims]
    kc, ky = jax.random.split(jax.random.key(seed))
    c = jax.random.normal(kc, c_shape, DTYPE)
    y = 1.5 * jax.random.normal(ky, (*c_shape[:-1], features), DTYPE)
    return c, y


def _perturbed(variables, seed, scale=0.5):
    """Every weight moved by ``scale * N(0, 1)``: the network's outputs are no longer zero."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, moved)


def _raw_outputs(module, variables, c, features):
    """The network's raw outputs (before any bound), as float64 numpy."""
    out = module.apply(variables, c, features, method=lambda m, c, f: m.net(c, f))
    return np.asarray(out, np.float64)


def _event_sum(values, event_ndims):
    return values.sum(axis=tuple(range(-event_ndims, 0)))


def _gaussian(event_ndims):
    _, _, hidden = SHAPES[event_ndims]
    dist = ConditionalGaussian(event_ndims=event_ndims, hidden=hidden)
    c, y = _arrays(event_ndims)
    return dist, dist.init(jax.random.key(1), y, c, method="log_prob"), c, y


def _bernoulli(event_ndims):
    _, _, hidden = SHAPES[event_ndims]
    coin = ConditionalBernoulli(event_ndims=event_ndims, hidden=hidden)
    c, y = _arrays(event_ndims)
    b = (y > 0).astype(DTYPE)
    return coin, coin.init(jax.random.key(2), b, c, method="log_prob"), c, b


# ConditionalGaussian -------------------------------------------------------------------------


@pytest.mark.parametrize("event_ndims", [1, 3])
def test_gaussian_starts_as_a_standard_normal(event_ndims):
    dist, variables, c, y = _gaussian(event_ndims)
    log_p = dist.apply(variables, y, c, method="log_prob")
    expected = _event_sum(stats.norm.logpdf(np.asarray(y, np.float64)), event_ndims)
    assert log_p.shape == c.shape[:-event_ndims] and log_p.dtype == DTYPE
    np.testing.assert_allclose(log_p, expected, rtol=TOL, atol=TOL)
    mean, log_scale = dist.apply(variables, c, y.shape[-1], method="mean_and_log_scale")
    np.testing.assert_array_equal(mean, 0.0)
    np.testing.assert_array_equal(log_scale, 0.0)


@pytest.mark.float64
@pytest.mark.parametrize("event_ndims", [1, 3])
def test_gaussian_log_prob_is_the_closed_form_normal_density(event_ndims):
    dist, variables, c, y = _gaussian(event_ndims)
    variables = _perturbed(variables, seed=3 + event_ndims)
    features = y.shape[-1]
    raw = _raw_outputs(dist, variables, c, 2 * features)  # (mean, raw log-scale)
    mean = raw[..., :features]
    scale = np.exp(LOG_SCALE_BOUND * np.tanh(raw[..., features:] / LOG_SCALE_BOUND))
    assert np.abs(mean).max() > 0.1 and np.abs(np.log(scale)).max() > 0.1  # not the N(0, 1)
    expected = _event_sum(stats.norm.logpdf(np.asarray(y, np.float64), mean, scale), event_ndims)
    log_p = dist.apply(variables, y, c, method="log_prob")
    np.testing.assert_allclose(log_p, expected, rtol=TOL, atol=TOL)


@pytest.mark.float64
@pytest.mark.parametrize("event_ndims", [1, 3])
def test_gaussian_sample_and_log_prob_agrees_with_sample_and_log_prob(event_ndims):
    dist, variables, c, y = _gaussian(event_ndims)
    variables = _perturbed(variables, seed=7 + event_ndims)
    key, features = jax.random.key(11), y.shape[-1]
    draw, log_p = dist.apply(variables, key, c, features, method="sample_and_log_prob")
    assert draw.shape == y.shape and log_p.shape == c.shape[:-event_ndims]
    np.testing.assert_array_equal(draw, dist.apply(variables, key, c, features, method="sample"))
    np.testing.assert_allclose(log_p, dist.apply(variables, draw, c, method="log_prob"),
                               rtol=10 * TOL, atol=10 * TOL)


def test_gaussian_samples_have_the_networks_mean_and_scale():
    dist, variables, c, _ = _gaussian(1)
    variables = _perturbed(variables, seed=5)
    n, features = 4000, 2
    keys = jax.random.split(jax.random.key(12), n)
    draws = np.asarray(jax.vmap(lambda k: dist.apply(variables, k, c, features,
                                                      method="sample"))(keys), np.float64)
    mean, log_scale = (np.asarray(a, np.float64) for a in dist.apply(
        variables, c, features, method="mean_and_log_scale"))
    scale = np.exp(log_scale)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * scale / math.sqrt(n))
    np.testing.assert_allclose(draws.std(0), scale, rtol=0.1)


def test_gaussian_gradients_flow_through_the_reparameterised_draw():
    dist, variables, c, _ = _gaussian(1)

    def total(v):
        draw, log_p = dist.apply(v, jax.random.key(0), c, 2, method="sample_and_log_prob")
        return jnp.sum(draw) + jnp.sum(log_p)

    grads = jax.grad(total)(variables)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_bounded_log_scale_stays_inside_the_bound_and_is_the_identity_near_zero():
    raw = jnp.asarray([-1e6, -1e3, -50.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 50.0, 1e3, 1e6], DTYPE)
    bounded = np.asarray(bounded_log_scale(raw), np.float64)
    assert np.all(np.abs(bounded) <= LOG_SCALE_BOUND)
    assert np.all(np.diff(bounded) >= 0)  # monotone
    np.testing.assert_allclose(bounded, LOG_SCALE_BOUND * np.tanh(np.asarray(raw) / 5.0),
                               rtol=TOL, atol=TOL)
    np.testing.assert_allclose(bounded[4:7], [-1e-3, 0.0, 1e-3], rtol=1e-5, atol=1e-9)
    assert float(jax.grad(bounded_log_scale)(jnp.asarray(0.0, DTYPE))) == pytest.approx(1.0)


def test_gaussian_scale_stays_bounded_for_huge_network_outputs():
    dist, variables, c, y = _gaussian(1)
    variables = _perturbed(variables, seed=2, scale=100.0)
    _, log_scale = dist.apply(variables, c, y.shape[-1], method="mean_and_log_scale")
    assert float(jnp.abs(log_scale).max()) <= LOG_SCALE_BOUND
    assert float(jnp.abs(log_scale).max()) > 4.0  # the bound is reached, not the raw value
    assert bool(jnp.all(jnp.isfinite(dist.apply(variables, y, c, method="log_prob"))))


@pytest.mark.parametrize("cls", [ConditionalGaussian, ConditionalBernoulli])
def test_densities_reject_other_event_ndims(cls):
    with pytest.raises(ConfigError, match="event_ndims 1 .* or 3"):
        cls(event_ndims=2, hidden=(4,)).init(jax.random.key(0), jnp.zeros((2, 3, 1)),
                                             jnp.zeros((2, 3, 2)), method="log_prob")


def test_a_single_event_without_batch_axis_matches_the_batched_call():
    dist, variables, c, y = _gaussian(3)
    variables = _perturbed(variables, seed=4)
    batched = dist.apply(variables, y, c, method="log_prob")
    single = dist.apply(variables, y[1], c[1], method="log_prob")
    assert single.shape == ()
    np.testing.assert_allclose(single, batched[1], rtol=TOL, atol=TOL)


# ConditionalBernoulli ------------------------------------------------------------------------


@pytest.mark.parametrize("event_ndims", [1, 3])
def test_bernoulli_starts_as_a_fair_coin(event_ndims):
    coin, variables, c, b = _bernoulli(event_ndims)
    dims = math.prod(b.shape[-event_ndims:])
    log_p = coin.apply(variables, b, c, method="log_prob")
    assert log_p.shape == c.shape[:-event_ndims]
    np.testing.assert_allclose(log_p, -dims * math.log(2.0), rtol=TOL)
    np.testing.assert_array_equal(coin.apply(variables, c, b.shape[-1], method="logits"), 0.0)


@pytest.mark.float64
@pytest.mark.parametrize("event_ndims", [1, 3])
def test_bernoulli_log_prob_is_the_closed_form_bernoulli_log_mass(event_ndims):
    coin, variables, c, b = _bernoulli(event_ndims)
    variables = _perturbed(variables, seed=13 + event_ndims)
    logits = _raw_outputs(coin, variables, c, b.shape[-1])
    assert np.abs(logits).max() > 0.1
    expected = _event_sum(stats.bernoulli.logpmf(np.asarray(b), special.expit(logits)),
                          event_ndims)
    np.testing.assert_allclose(coin.apply(variables, b, c, method="log_prob"), expected,
                               rtol=TOL, atol=TOL)
    as_ints = coin.apply(variables, b.astype(jnp.int32), c, method="log_prob")  # any dtype
    np.testing.assert_allclose(as_ints, expected, rtol=TOL, atol=TOL)


def test_bernoulli_samples_are_bits_with_the_networks_probabilities():
    coin, variables, c, b = _bernoulli(1)
    variables = _perturbed(variables, seed=17)
    n, features = 4000, b.shape[-1]
    keys = jax.random.split(jax.random.key(3), n)
    draws = jax.vmap(lambda k: coin.apply(variables, k, c, features, method="sample"))(keys)
    assert draws.dtype == DTYPE and draws.shape == (n, *b.shape)
    assert set(np.unique(np.asarray(draws)).tolist()) <= {0.0, 1.0}
    p = special.expit(_raw_outputs(coin, variables, c, features))
    stderr = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(np.asarray(draws, np.float64).mean(0) - p) < 4 * stderr + 1e-3)


# LogLikelihood -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def realnvp():
    flow = jm.realnvp((2,), n_couplings=2, hidden=(8,))
    x = jnp.asarray([[0.3, -1.2], [1.5, 0.4], [0.0, 0.1]], jnp.float32)
    return flow, flow.init(jax.random.key(0), x, method="log_prob"), x


@pytest.fixture(scope="module")
def augmented():
    flow = jm.Flow(jb.Chain([jb.Augment(features=2, hidden=(8,))]),
                   jm.StandardNormal((4,)), (2,))
    x = jnp.asarray([[0.3, -1.2], [1.5, 0.4]], jnp.float32)
    rngs = {"params": jax.random.key(0), NOISE: jax.random.key(1)}
    return flow, flow.init(rngs, x, method="log_prob"), x


def test_log_likelihood_of_a_bijective_flow_is_the_exact_log_prob(realnvp):
    flow, variables, x = realnvp
    result = flow.apply(variables, x, method="log_likelihood")
    assert isinstance(result, jm.LogLikelihood)
    assert result.estimate == Estimate.EXACT and result.samples == 1
    assert not result.is_bound and result.name == "exact log-likelihood"
    np.testing.assert_allclose(result.value, flow.apply(variables, x, method="log_prob"),
                               rtol=1e-6)
    # a bijection ignores the number of importance samples: still exact, K = 1
    many = flow.apply(variables, x, 3, method="log_likelihood")
    assert many.samples == 1 and many.name == "exact log-likelihood"
    np.testing.assert_allclose(many.value, result.value, rtol=1e-6)
    np.testing.assert_allclose(result.bits_per_dim(2),
                               -np.asarray(result.value) / (2 * math.log(2.0)), rtol=1e-6)


def test_log_likelihood_of_a_stochastic_flow_is_an_elbo_or_iwbo(augmented):
    flow, variables, x = augmented
    rngs = {NOISE: jax.random.key(5)}
    elbo = flow.apply(variables, x, method="log_likelihood", rngs=rngs)
    assert elbo.estimate == Estimate.BOUND and elbo.is_bound
    assert elbo.samples == 1 and elbo.name == "ELBO"
    np.testing.assert_allclose(elbo.value, flow.apply(variables, x, method="log_prob",
                                                       rngs=rngs), rtol=1e-6)
    iwbo = flow.apply(variables, x, 3, method="log_likelihood", rngs=rngs)
    assert iwbo.samples == 3 and iwbo.name == "IWBO (K=3)" and iwbo.value.shape == (2,)
    np.testing.assert_allclose(iwbo.value, flow.apply(variables, x, 3, method="iwbo",
                                                       rngs=rngs), rtol=1e-6)


def test_log_likelihood_passes_through_jit_with_its_metadata(augmented):
    flow, variables, x = augmented
    fn = jax.jit(lambda v, x, k: flow.apply(v, x, 4, method="log_likelihood", rngs={NOISE: k}))
    result = fn(variables, x, jax.random.key(2))
    assert isinstance(result, jm.LogLikelihood)
    assert (result.estimate, result.samples, result.value.shape) == (Estimate.BOUND, 4, (2,))
    leaves = jax.tree.leaves(result)
    assert len(leaves) == 1 and leaves[0] is result.value  # only the value is a leaf


@pytest.mark.parametrize(("estimate", "name"), [
    (Estimate.EXACT, "exact log-likelihood"),
    (Estimate.UNBIASED, "unbiased estimate of the log-likelihood"),
    (Estimate.BIASED, "biased estimate of the log-likelihood"),
    (Estimate.BOUND, "IWBO (K=3)"),
])
def test_log_likelihood_names(estimate, name):
    result = jm.LogLikelihood(jnp.asarray([-1.0, -3.0]), estimate, 3)
    assert result.name == name
    assert result.is_bound == (estimate == Estimate.BOUND)
    np.testing.assert_allclose(result.bits_per_dim(4), [1 / (4 * math.log(2)),
                                                        3 / (4 * math.log(2))], rtol=1e-6)
    default = jm.LogLikelihood(jnp.zeros(1))
    assert (default.estimate, default.samples) == (Estimate.EXACT, 1)


# MapLipschitz and LipschitzReport ------------------------------------------------------------


def test_map_lipschitz_of_is_numpys_maximum_and_quantiles():
    values = np.random.default_rng(0).lognormal(size=101).astype(np.float32)
    levels = (0.0, 0.25, 0.5, 0.9, 0.99, 1.0)
    part = MapLipschitz.of(jnp.asarray(values), levels)
    assert part.values.dtype == np.float64 and part.values.shape == (101,)
    assert isinstance(part.max, float) and part.max == float(values.max())
    assert list(part.quantiles) == list(levels)
    for q in levels:
        assert part.quantiles[q] == pytest.approx(np.quantile(values.astype(np.float64), q),
                                                  rel=1e-12)
    assert part.quantiles[0.0] == float(values.min()) and part.quantiles[1.0] == part.max
    assert MapLipschitz.of(values, ()).quantiles == {}


def test_lipschitz_report_figures_are_flat_and_json_ready():
    rng = np.random.default_rng(1)
    fwd = MapLipschitz.of(1 + rng.random(20), (0.5, 0.9, 0.999))
    inv = MapLipschitz.of(2 + rng.random(20), (0.5, 0.9, 0.999))
    report = LipschitzReport(fwd, inv, fwd.max * inv.max, 1e-6, "direct", "the map")
    figures = report.figures()
    assert figures == {
        "forward_max": fwd.max, "forward_q50": fwd.quantiles[0.5],
        "forward_q90": fwd.quantiles[0.9], "forward_q99.9": fwd.quantiles[0.999],
        "inverse_max": inv.max, "inverse_q50": inv.quantiles[0.5],
        "inverse_q90": inv.quantiles[0.9], "inverse_q99.9": inv.quantiles[0.999],
        "bi_lipschitz": fwd.max * inv.max, "inversion_error": 1e-6, "points": 20,
        "inverse_method": "direct", "measured": "the map",
    }
    assert json.loads(json.dumps(figures)) == figures
    summary = report.summary()
    assert f"Lip(f) {fwd.max:.4g} (median {fwd.quantiles[0.5]:.4g})" in summary
    assert summary.endswith("over 20 points")
