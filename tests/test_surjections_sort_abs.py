"""The absolute value with learned signs, Sort and StochasticPermutation against analytic values.

The generic checks of these layers (declarations, determinism, jit, vmap, round trips, missing
streams) are in ``tests/test_contract_kinds.py``; here each contribution is compared with a
closed form or a brute-force computation, and each random draw with its distribution.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import bijectors as jb
from jflows import models as jm
from jflows.errors import NotBijectiveError, ShapeError
from jflows.names import NOISE, SAMPLE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-9 if X64 else 2e-5


def _log_sigmoid(v):
    """``log sigmoid(v)`` in float64 NumPy, written out by hand."""
    v = np.asarray(v, np.float64)
    return -np.log1p(np.exp(-v))


def _chi_square(codes: np.ndarray, categories: int) -> float:
    """Pearson's statistic of the counts of ``codes`` in ``0 .. categories-1`` against uniform."""
    counts = np.bincount(codes, minlength=categories)
    assert len(counts) == categories
    expected = len(codes) / categories
    return float(((counts - expected) ** 2 / expected).sum())


def _permutation_codes(z: np.ndarray) -> np.ndarray:
    """One integer per row of ``z`` (rows are permutations of ``0 .. D-1``), base ``D``."""
    d = z.shape[-1]
    return (np.rint(z).astype(np.int64) * d ** np.arange(d - 1, -1, -1)).sum(-1)


CHI2_LIMIT = 30.0  # 5 degrees of freedom (D = 3): P(chi2 > 30) is about 1.5e-5


# --- AbsoluteValue with learned signs --------------------------------------------------------

# a vector layer whose sign logits are l_i = a_i |x_i| + b_i: hidden=(D,), first layer the
# identity (relu(|x|) = |x|), last layer diag(a) with bias b
A = np.array([1.5, -2.0, 0.0])
B = np.array([-0.5, 0.25, 1.0])


def _known_vector_layer(x):
    layer = jb.AbsoluteValue(learned_signs=True, hidden=(3,))
    params = jax.tree.map(np.asarray, layer.init(jax.random.key(0), x)["params"])
    net = params["sign_density"]["net"]
    net["Dense_0"]["kernel"] = np.eye(3, dtype=net["Dense_0"]["kernel"].dtype)
    net["Dense_0"]["bias"] = np.zeros(3, net["Dense_0"]["bias"].dtype)
    net["Dense_1"]["kernel"] = np.diag(A).astype(net["Dense_1"]["kernel"].dtype)
    net["Dense_1"]["bias"] = B.astype(net["Dense_1"]["bias"].dtype)
    return layer, {"params": params}


@pytest.mark.float64
def test_learned_absolute_value_declarations_and_initial_fair_coin():
    layer = jb.AbsoluteValue(learned_signs=True, hidden=(8,))
    assert layer.kind == jb.Kind.INFERENCE_SURJECTION and layer.rng_streams == {SAMPLE}
    for shape, event_ndims, hidden in (((4,), 1, (8,)), ((4, 4, 2), 3, 4)):
        x = jax.random.normal(jax.random.key(1), (2, 3, *shape), DTYPE)
        layer = jb.AbsoluteValue(event_ndims=event_ndims, learned_signs=True, hidden=hidden)
        variables = layer.init(jax.random.key(0), x)
        assert jax.tree.leaves(variables)  # it has parameters now
        z, contribution = layer.apply(variables, x)
        np.testing.assert_array_equal(z, jnp.abs(x))
        assert contribution.shape == (2, 3)
        np.testing.assert_allclose(contribution, -math.prod(shape) * math.log(2.0), rtol=TOL)


def test_fixed_signs_have_no_parameters():
    x = jnp.ones((2, 4))
    assert jax.tree.leaves(jb.AbsoluteValue().init(jax.random.key(0), x)) == []


@pytest.mark.float64
def test_learned_absolute_value_contribution_is_the_bernoulli_log_probability_vectors():
    x = jax.random.normal(jax.random.key(2), (7, 3), DTYPE) * 2.0
    x = x.at[0, 0].set(0.0)  # x = 0 counts as a positive sign
    layer, variables = _known_vector_layer(x)
    z, contribution = layer.apply(variables, x)
    np.testing.assert_array_equal(z, jnp.abs(x))
    xn = np.asarray(x, np.float64)
    logits = A * np.abs(xn) + B
    positive = xn >= 0
    expected = np.where(positive, _log_sigmoid(logits), _log_sigmoid(-logits)).sum(-1)
    np.testing.assert_allclose(contribution, expected, rtol=TOL, atol=TOL)
    # one event, and jit
    single = layer.apply(variables, x[3])[1]
    np.testing.assert_allclose(single, expected[3], rtol=TOL, atol=TOL)
    jitted = jax.jit(lambda v: layer.apply(variables, v))(x)[1]
    np.testing.assert_allclose(jitted, expected, rtol=TOL, atol=TOL)


@pytest.mark.float64
def test_learned_absolute_value_contribution_is_the_bernoulli_log_probability_images():
    shape = (3, 2, 2)  # (H, W, C)
    x = jax.random.normal(jax.random.key(3), (2, 4, *shape), DTYPE)
    layer = jb.AbsoluteValue(event_ndims=3, learned_signs=True, hidden=4)
    params = jax.tree.map(np.asarray, layer.init(jax.random.key(0), x)["params"])
    last = params["sign_density"]["net"]["Conv_2"]
    assert not last["kernel"].any()  # zero-initialised: the logit is the bias, per channel
    channel_logits = np.array([0.8, -1.3])
    last["bias"] = channel_logits.astype(last["bias"].dtype)
    _, contribution = layer.apply({"params": params}, x)
    positive = np.asarray(x) >= 0
    expected = np.where(positive, _log_sigmoid(channel_logits), _log_sigmoid(-channel_logits))
    expected = expected.sum((-3, -2, -1))
    np.testing.assert_allclose(contribution, expected, rtol=TOL, atol=TOL)


def test_learned_absolute_value_inverse_draws_signs_with_the_known_probability():
    z0 = np.array([0.3, 0.7, 1.1])
    n = 20000
    z = jnp.asarray(np.tile(z0, (n, 1)), DTYPE)
    layer, variables = _known_vector_layer(z[:2])
    x = layer.apply(variables, z, method="inverse", rngs={SAMPLE: jax.random.key(4)})
    np.testing.assert_allclose(jnp.abs(x), z, rtol=0, atol=0)
    frequency = np.asarray(x > 0).mean(0)
    p = 1.0 / (1.0 + np.exp(-(A * z0 + B)))
    stderr = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(frequency - p) < 5 * stderr), (frequency, p)
    again = layer.apply(variables, z, method="inverse", rngs={SAMPLE: jax.random.key(4)})
    np.testing.assert_array_equal(x, again)
    with pytest.raises(NotBijectiveError):
        layer.apply(variables, z, method="inverse_and_log_det", rngs={SAMPLE: jax.random.key(0)})


@pytest.mark.float64
def test_learned_absolute_value_gives_the_exact_density_of_symmetric_data_at_a_fair_coin():
    """x ~ N(0, s^2) in 1-D: a half-normal base plus the (initial, fair) learned signs give
    exactly N(x; 0, s^2)."""
    s = 1.7
    x = jnp.linspace(-4.0, 4.0, 9, dtype=DTYPE)[:, None]
    layer = jb.AbsoluteValue(learned_signs=True, hidden=(8,))
    variables = layer.init(jax.random.key(0), x)
    z, contribution = layer.apply(variables, x)
    log_half_normal = math.log(2.0) + jax.scipy.stats.norm.logpdf(z[:, 0], scale=s)
    exact = jax.scipy.stats.norm.logpdf(x[:, 0], scale=s)
    np.testing.assert_allclose(log_half_normal + contribution, exact, rtol=TOL, atol=TOL)


@pytest.mark.float64
def test_learned_absolute_value_density_integrates_to_one_with_skewed_signs():
    """1-D, logit a|x| + b: ``p(x) = p_half(|x|) p(s | |x|)`` is an asymmetric density whose
    integral (midpoint rule on each half line, where it is smooth) is 1, and whose mass on
    x > 0 is ``E[sigmoid(a Z + b)]`` for Z half-normal."""
    a, b, s = 2.0, -0.7, 1.3
    n, hi = 12000, 12.0
    h = hi / n
    half_line = (np.arange(n) + 0.5) * h  # midpoints of (0, hi)
    x = jnp.asarray(np.concatenate([-half_line, half_line])[:, None], DTYPE)
    layer = jb.AbsoluteValue(learned_signs=True, hidden=(1,))
    params = jax.tree.map(np.asarray, layer.init(jax.random.key(0), x[:2])["params"])
    net = params["sign_density"]["net"]
    net["Dense_0"]["kernel"] = np.ones_like(net["Dense_0"]["kernel"])
    net["Dense_0"]["bias"] = np.zeros_like(net["Dense_0"]["bias"])
    net["Dense_1"]["kernel"] = np.full_like(net["Dense_1"]["kernel"], a)
    net["Dense_1"]["bias"] = np.full_like(net["Dense_1"]["bias"], b)
    z, contribution = layer.apply({"params": params}, x)
    log_half_normal = math.log(2.0) + jax.scipy.stats.norm.logpdf(z[:, 0], scale=s)
    density = np.asarray(jnp.exp(log_half_normal + contribution), np.float64)
    negative, positive = density[:n].sum() * h, density[n:].sum() * h
    assert abs(negative + positive - 1.0) < 1e-5, negative + positive
    p_half = 2 * np.exp(-0.5 * (half_line / s) ** 2) / (s * math.sqrt(2 * math.pi))
    expected = (p_half / (1 + np.exp(-(a * half_line + b)))).sum() * h
    assert abs(positive - expected) < 1e-5, (positive, expected)
    assert positive > 0.6  # the signs are skewed towards positive


# --- Sort ------------------------------------------------------------------------------------

@pytest.mark.float64
def test_sort_sorts_and_contributes_minus_log_d_factorial():
    for d in (1, 2, 3, 5):
        x = jax.random.normal(jax.random.key(d), (2, 3, d), DTYPE)
        z, contribution = jb.Sort().apply({}, x)
        np.testing.assert_array_equal(z, np.sort(np.asarray(x), axis=-1))
        assert contribution.shape == (2, 3)
        np.testing.assert_allclose(contribution, -math.log(math.factorial(d)), rtol=TOL)
        z1, c1 = jb.Sort().apply({}, x[0, 0])
        assert c1.shape == ()
        np.testing.assert_array_equal(z1, z[0, 0])
    layer = jb.Sort()
    assert layer.kind == jb.Kind.INFERENCE_SURJECTION and layer.rng_streams == {SAMPLE}
    with pytest.raises(ShapeError):
        layer.apply({}, jnp.asarray(1.0, DTYPE))
    with pytest.raises(NotBijectiveError):
        layer.apply({}, x, method="inverse_and_log_det", rngs={SAMPLE: jax.random.key(0)})


MU = (0.4, -0.3, 1.2)


def _sorted_gaussian_flow(mu):
    """``log p(x) = log N(sort(x); mu, I) - log D!`` as a Flow: Sort, then a shift by -mu."""
    d = len(mu)
    return jm.Flow(jb.Chain([jb.Sort(), jb.FixedAffine(shift=tuple(-m for m in mu))]),
                   jm.StandardNormal((d,), dtype=DTYPE), (d,), dtype=DTYPE)


def _log_normal(z, mu):
    z = np.asarray(z, np.float64)
    return float((-0.5 * (z - np.asarray(mu)) ** 2 - 0.5 * math.log(2 * math.pi)).sum())


@pytest.mark.float64
def test_sort_flow_density_by_brute_force_over_permutations():
    """The generative process of a Sort flow: z from the base restricted to sorted points
    (``p_ord(z) = N(z; mu, I) 1[z sorted] / M``), then x a uniformly random permutation of z.
    Its density, summed over the D! ways of permuting x back, is
    ``p(x) = sum_perm 1[x_perm sorted] N(x_perm; mu, I) / (D! M)``; the flow's density (base
    not restricted) is exactly ``M p(x)``. The D! preimages of z carry equal density, which
    adds up to ``N(sort x; mu, I)``."""
    d = len(MU)
    flow = _sorted_gaussian_flow(MU)
    points = np.random.default_rng(5).normal(size=(6, d)) * 1.5
    for x in points:
        brute = 0.0
        for perm in itertools.permutations(range(d)):
            xp = x[list(perm)]
            if np.all(np.diff(xp) >= 0):
                brute += math.exp(_log_normal(xp, MU)) / math.factorial(d)  # M p(x)
        preimages = np.array([x[list(p)] for p in itertools.permutations(range(d))])
        log_p = np.asarray(flow.apply({}, jnp.asarray(preimages, DTYPE), method="log_prob"))
        np.testing.assert_allclose(np.exp(log_p), brute, rtol=1e3 * TOL)
        np.testing.assert_allclose(np.exp(log_p).sum(), math.exp(_log_normal(np.sort(x), MU)),
                                   rtol=1e3 * TOL)


@pytest.mark.float64
def test_sort_flow_density_integrates_to_the_base_mass_on_sorted_points():
    """D = 2: the flow's density integrates over the plane (by quadrature) to the base's
    mass on ``z_1 <= z_2``, ``Phi((mu_2 - mu_1) / sqrt 2)``; exactly 1 for a base that lives
    on sorted points."""
    mu = (0.5, -0.4)
    flow = _sorted_gaussian_flow(mu)
    n, lo, hi = 481, -9.0, 9.0
    grid = jnp.linspace(lo, hi, n, dtype=DTYPE)
    x = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), -1)  # (n, n, 2)
    density = np.asarray(jnp.exp(flow.apply({}, x, method="log_prob")), np.float64)
    h = (hi - lo) / (n - 1)
    total = np.trapezoid(np.trapezoid(density, dx=h, axis=1), dx=h)
    mass = 0.5 * math.erfc(-(mu[1] - mu[0]) / 2.0)  # Phi((mu2 - mu1) / sqrt 2)
    assert abs(total - mass) < 2e-4, (total, mass)


def test_sort_inverse_draws_every_ordering_equally_often():
    n, d = 6000, 3
    z = jnp.tile(jnp.arange(d, dtype=DTYPE), (n, 1))
    x = jb.Sort().apply({}, z, method="inverse", rngs={SAMPLE: jax.random.key(6)})
    np.testing.assert_array_equal(np.sort(np.asarray(x), -1), z)
    codes = _permutation_codes(np.asarray(x))
    used = np.unique(codes)
    assert len(used) == math.factorial(d)  # every ordering appears, and only orderings
    stat = _chi_square(np.searchsorted(used, codes), math.factorial(d))
    assert stat < CHI2_LIMIT, stat


# --- StochasticPermutation -------------------------------------------------------------------

@pytest.mark.float64
def test_stochastic_permutation_permutes_with_zero_contribution():
    layer = jb.StochasticPermutation()
    assert layer.kind == jb.Kind.STOCHASTIC and layer.estimate == jb.Estimate.BOUND
    assert layer.rng_streams == {NOISE, SAMPLE}
    x = jax.random.normal(jax.random.key(7), (2, 4, 5), DTYPE)
    z, contribution = layer.apply({}, x, rngs={NOISE: jax.random.key(0)})
    np.testing.assert_array_equal(contribution, np.zeros((2, 4)))
    np.testing.assert_array_equal(np.sort(np.asarray(z), -1), np.sort(np.asarray(x), -1))
    assert not np.array_equal(z, x)
    z_other, _ = layer.apply({}, x, rngs={NOISE: jax.random.key(1)})
    assert not np.array_equal(z, z_other)  # different keys: different permutations
    x_back = layer.apply({}, z, method="inverse", rngs={SAMPLE: jax.random.key(2)})
    np.testing.assert_array_equal(np.sort(np.asarray(x_back), -1), np.sort(np.asarray(x), -1))
    with pytest.raises(NotBijectiveError):
        layer.apply({}, z, method="inverse_and_log_det", rngs={SAMPLE: jax.random.key(0)})


def test_stochastic_permutation_draws_every_ordering_equally_often():
    n, d = 6000, 3
    x = jnp.tile(jnp.arange(d, dtype=DTYPE), (n, 1))
    layer = jb.StochasticPermutation()
    for method, stream in (("forward", NOISE), ("inverse", SAMPLE)):
        z = layer.apply({}, x, method=method, rngs={stream: jax.random.key(8)})
        codes = _permutation_codes(np.asarray(z))
        used = np.unique(codes)
        assert len(used) == math.factorial(d), method
        stat = _chi_square(np.searchsorted(used, codes), math.factorial(d))
        assert stat < CHI2_LIMIT, (method, stat)
