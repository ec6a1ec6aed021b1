"""Log-det kernels: exact brute force, series estimators (values), probes and roulette weights."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import contractive_mlp, mlp, randn, z_threshold

from jflows.errors import ConfigError, ShapeError
from jflows.kernels import (
    draw_n_terms,
    event_jacobians,
    logdet_estimate,
    logdet_estimate_with_info,
    logdet_exact,
    power_series_terms,
    sample_probe,
    survival_prob,
    term_weight,
    truncation_bound,
)

N_KEYS = 16384


@jax.jit
def exact_logdet(params, x):
    return logdet_exact(mlp(params), x, 1)[1]


@jax.jit
def exact_terms(params, x):
    return power_series_terms(event_jacobians(mlp(params), x, 1)[1], 8)


@functools.partial(jax.jit, static_argnames=("n_exact_terms", "tail", "probe"))
def estimates(params, x, keys, n_exact_terms, tail=None, probe="gaussian"):
    def one(key):
        return logdet_estimate(
            mlp(params),
            x,
            key,
            1,
            n_exact_terms=n_exact_terms,
            tail=tail,
            probe=probe,
            gradient="none",
        )[1]

    return jax.vmap(one)(keys)


def keys_for(n, seed=1):
    return jax.random.split(jax.random.key(seed), n)


# ----------------------------------------------------------------------------- exact


def test_logdet_exact_linear_matches_closed_form_and_gradient():
    a = 0.3 * randn(0, (3, 3))
    x = randn(1, (4, 3))

    @jax.jit
    def value_and_grad(m):
        (gx, ld), vjp = jax.vjp(lambda m: logdet_exact(lambda z: z @ m, x, 1), m)
        return gx, ld, vjp((jnp.zeros_like(gx), jnp.ones_like(ld)))[0]

    gx, ld, grad = value_and_grad(a)
    np.testing.assert_allclose(gx, x @ a, rtol=1e-6)
    want = jnp.linalg.slogdet(jnp.eye(3) + a)[1]
    np.testing.assert_allclose(ld, jnp.full((4,), want), rtol=1e-5)
    # d/dA log det(I + A) = (I + A)^{-T}, once per example.
    np.testing.assert_allclose(grad, 4 * jnp.linalg.inv(jnp.eye(3) + a).T, rtol=1e-4)


def test_logdet_exact_batch_shapes():
    params = contractive_mlp(0, 3, 8, 0.6)
    x = randn(1, (2, 3, 3))
    gx, ld = jax.jit(lambda p, x: logdet_exact(mlp(p), x, 1))(params, x)
    assert gx.shape == x.shape
    assert ld.shape == (2, 3)
    np.testing.assert_allclose(ld.reshape(-1), exact_logdet(params, x.reshape(-1, 3)), rtol=1e-6)
    _, single = logdet_exact(mlp(params), x[1, 2], 1)
    assert single.shape == ()
    np.testing.assert_allclose(single, ld[1, 2], rtol=1e-6)


def test_logdet_exact_image_event():
    kernel = 0.1 * randn(0, (3, 3, 2, 2))

    def g(x):
        dn = ("NHWC", "HWIO", "NHWC")
        out = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=dn)
        return jnp.tanh(out)

    @jax.jit
    def check(x):
        _, ld = logdet_exact(g, x, 3)
        jac = jax.jacfwd(lambda e: g(e[None])[0])(x[1]).reshape(18, 18)
        return ld[1], jnp.linalg.slogdet(jnp.eye(18) + jac)[1]

    got, want = check(randn(1, (2, 3, 3, 2)))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_logdet_exact_rejects_small_rank():
    with pytest.raises(ShapeError):
        logdet_exact(lambda z: z, jnp.ones(3), 3)


# ------------------------------------------------------------------- probes and weights


def test_probes_have_identity_second_moment():
    @jax.jit
    def moments(key):
        out = []
        for kind in ("gaussian", "rademacher"):
            v = sample_probe(key, (20000, 3), jnp.float32, kind)
            out.append(v.T @ v / v.shape[0])
        return out, sample_probe(key, (50,), kind="rademacher")

    (gauss, rade), signs = moments(jax.random.key(0))
    np.testing.assert_allclose(gauss, np.eye(3), atol=0.04)
    np.testing.assert_allclose(rade, np.eye(3), atol=0.04)
    np.testing.assert_array_equal(np.abs(signs), np.ones(50))
    with pytest.raises(ConfigError, match="probe"):
        sample_probe(jax.random.key(0), (2,), kind="uniform")


def test_survival_matches_empirical_frequencies():
    j = np.arange(-1, 7)

    @jax.jit
    def draws_and_probs(keys):
        geo = jax.vmap(lambda k: draw_n_terms(k, 0, "geometric", geom_p=0.4))(keys)
        poi = jax.vmap(lambda k: draw_n_terms(k, 0, "poisson", poisson_lam=1.5))(keys)
        probs = (
            survival_prob(j, "geometric", geom_p=0.4),
            survival_prob(j, "poisson", poisson_lam=1.5),
        )
        return (geo, poi), probs

    samples, probs = draws_and_probs(keys_for(20000, seed=0))
    for n, prob in zip(samples, probs):
        n, prob = np.asarray(n), np.asarray(prob)
        freq = np.mean(n[:, None] >= j[None, :], axis=0)
        se = np.sqrt(prob * (1 - prob) / n.shape[0]) + 1e-6
        assert np.all(np.abs(freq - prob) <= 4 * se), (freq, prob)
    assert int(samples[0].min()) == 1  # geometric support starts at 1
    assert int(samples[1].min()) == 0  # Poisson support starts at 0
    # Closed forms: P(N >= j) = (1 - p)^(j - 1) and 1 - e^{-lam} sum_{i < j} lam^i / i!.
    np.testing.assert_allclose(probs[0], [1, 1, 1, 0.6, 0.36, 0.216, 0.1296, 0.07776], 1e-6)
    poisson_sf = [1 - math.exp(-1.5) * sum(1.5**i / math.factorial(i) for i in range(k)) for k in j]
    np.testing.assert_allclose(probs[1], poisson_sf, rtol=1e-5)


def test_term_weights_are_one_for_exact_terms():
    k = jnp.arange(1, 8)
    w = term_weight(k, 3, "geometric", geom_p=0.5)
    np.testing.assert_allclose(w, [1, 1, 1, 1, 2, 4, 8])
    np.testing.assert_allclose(term_weight(k, 3, None), jnp.ones(7))


# ------------------------------------------------------------------ series: values


@pytest.mark.parametrize(("d", "tail"), [(2, "geometric"), (16, "poisson")])
def test_roulette_is_unbiased(d, tail):
    params = contractive_mlp(d, d, 24, 0.55)
    x = randn(7, (3, d))
    exact = exact_logdet(params, x)
    est = estimates(params, x, keys_for(N_KEYS), 2, tail)
    se = est.std(0) / math.sqrt(est.shape[0])
    z = jnp.abs(est.mean(0) - exact) / se
    assert jnp.all(z < z_threshold(3)), (z, exact, est.mean(0))
    # The test has power: the 2-term truncation's bias is well outside the error bars.
    trunc = exact_terms(params, x)[:, :2].sum(-1)
    assert jnp.all(jnp.abs(trunc - exact) > 4 * se)


def test_eval_setting_is_unbiased():
    params = contractive_mlp(16, 16, 24, 0.55)
    x = randn(7, (3, 16))
    exact = exact_logdet(params, x)
    est = estimates(params, x, keys_for(2048), 20, "poisson")
    se = est.std(0) / math.sqrt(est.shape[0])
    assert jnp.all(jnp.abs(est.mean(0) - exact) < z_threshold(3) * se)


def test_truncated_series_mean_is_exact_truncation():
    params = contractive_mlp(16, 16, 24, 0.55)
    x = randn(7, (3, 16))
    want = exact_terms(params, x)[:, :2].sum(-1)
    est = estimates(params, x, keys_for(N_KEYS), 2, None, "rademacher")
    se = est.std(0) / math.sqrt(est.shape[0])
    assert jnp.all(jnp.abs(est.mean(0) - want) < z_threshold(3) * se)
    assert jnp.all(jnp.abs(exact_logdet(params, x) - want) > 4 * se)


def test_truncation_remainder_is_exact_in_float64():
    with jax.enable_x64(True):
        params = contractive_mlp(8, 5, 16, 0.7, jnp.float64)
        x = randn(9, (3, 5), jnp.float64)

        @jax.jit
        def exact_and_terms(params, x):
            _, jac = event_jacobians(mlp(params), x, 1)
            return logdet_exact(mlp(params), x, 1)[1], power_series_terms(jac, 80)

        exact, terms = exact_and_terms(params, x)
        assert terms.dtype == jnp.float64
        for n in (1, 2, 5, 10):
            remainder = terms[..., n:].sum(-1)
            np.testing.assert_allclose(exact - terms[..., :n].sum(-1), remainder, atol=1e-12)
            assert jnp.all(jnp.abs(remainder) <= truncation_bound(0.7, 5, n))


def test_backprop_and_none_give_the_same_value_as_neumann():
    params = contractive_mlp(10, 3, 8, 0.6)
    x = randn(11, (4, 3))

    @jax.jit
    def values(key):
        kw = {"n_exact_terms": 4}
        return [
            logdet_estimate(mlp(params), x, key, 1, gradient=grad, **kw)[1]
            for grad in ("neumann", "backprop", "none")
        ]

    vals = values(jax.random.key(12))
    np.testing.assert_allclose(vals[0], vals[1], rtol=1e-5)
    np.testing.assert_allclose(vals[0], vals[2], rtol=1e-6)


def test_estimate_batch_shapes_and_images():
    params = contractive_mlp(13, 3, 8, 0.6)
    key = jax.random.key(0)

    @functools.partial(jax.jit, static_argnums=1)
    def run(x, event_ndims):
        return logdet_estimate(mlp(params), x, key, event_ndims, n_exact_terms=2)

    for shape, event_ndims, lead in [
        ((3,), 1, ()),
        ((2, 3, 3), 1, (2, 3)),
        ((2, 2, 2, 3), 3, (2,)),
    ]:
        x = randn(14, shape)
        gx, ld = run(x, event_ndims)  # the image case: g acts on the channels of every pixel
        assert gx.shape == x.shape
        assert ld.shape == lead


# ------------------------------------------------------------- cost follows K


def test_loop_trip_count_equals_drawn_terms():
    params = contractive_mlp(16, 3, 8, 0.6)
    x = randn(17, (2, 3))

    @functools.partial(jax.jit, static_argnums=1)
    def info(key, tail="geometric"):
        kw = {"n_exact_terms": 2, "tail": tail, "gradient": "none"}
        return logdet_estimate_with_info(mlp(params), x, key, 1, **kw)[2]

    n_terms, trips = jax.vmap(info)(keys_for(4096, seed=0))
    np.testing.assert_array_equal(trips, n_terms)
    assert int(n_terms.min()) == 3  # E + min N
    assert int(n_terms.max()) > 6
    mean, se = float(n_terms.mean()), float(n_terms.std()) / 64.0
    assert abs(mean - 4.0) < 4 * se  # E[K] = 2 + E[N] = 4 for Geom(0.5)
    for i in range(3):  # unbatched calls
        n, t = info(jax.random.key(100 + i))
        assert int(t) == int(n)
    assert int(info(jax.random.key(0), None).loop_trips) == 2
    jaxpr = str(jax.make_jaxpr(info)(jax.random.key(0)))
    assert "while" in jaxpr


# ------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_exact_terms": -1}, "n_exact_terms"),
        ({"n_exact_terms": 2.0}, "n_exact_terms"),
        ({"n_exact_terms": 2, "tail": "gamma"}, "tail"),
        ({"n_exact_terms": 2, "tail": "geometric", "geom_p": 1.0}, "geom_p"),
        ({"n_exact_terms": 2, "tail": "poisson", "poisson_lam": 0.0}, "poisson_lam"),
        ({"n_exact_terms": 2, "probe": "sphere"}, "probe"),
        ({"n_exact_terms": 2, "gradient": "exact"}, "gradient"),
        ({"n_exact_terms": 2, "tail": "poisson", "gradient": "backprop"}, "backprop"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        logdet_estimate(jnp.tanh, jnp.ones((2, 2)), jax.random.key(0), 1, **kwargs)


def test_estimate_rejects_bad_event_rank():
    with pytest.raises(ShapeError):
        logdet_estimate(jnp.tanh, jnp.ones(3), jax.random.key(0), 2, n_exact_terms=2)
