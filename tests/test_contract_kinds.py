"""The contract of the layer kinds other than bijections (those are in test_contract.py).

Inference surjections: the deterministic data-to-latent direction, the round trip on the image
of the inverse, the contribution against its analytic value. Stochastic layers: determinism for
a fixed key, jit and vmap equal per key, and the bound below the exact log-likelihood on a case
where both are computable. Plus the containers' derived declarations, and a stochastic layer
inside a ``Stack`` drawing different noise in every block.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import bijectors as jb
from jflows import models as jm
from jflows.bijectors import Estimate, Kind, Layer
from jflows.errors import MissingRngError, NotBijectiveError
from jflows.names import DEQUANT, DIAGNOSTICS, LOGDET, NOISE, SAMPLE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-9 if X64 else 2e-5
MODEL_DTYPE = "float64" if X64 else "float32"


def _init_apply(module, x, rngs, method="forward_and_log_det"):
    variables = module.init({"params": jax.random.key(0), **rngs}, x, method=method)
    return variables, functools.partial(module.apply, variables, method=method)


# --- inference surjections ---------------------------------------------------------------

SURJECTIONS = {
    "absolute_vector": (lambda: jb.AbsoluteValue(), (4,)),
    "absolute_image": (lambda: jb.AbsoluteValue(event_ndims=3), (4, 4, 2)),
    "chain_actnorm_absolute": (lambda: jb.Chain([jb.ActNorm(), jb.AbsoluteValue()]), (4,)),
    "model_absolute": (lambda: jm.absolute((4,), n_couplings=2, hidden=(8,), sign_hidden=(4,),
                                           dtype=MODEL_DTYPE), (4,)),
    "model_maxpool": (lambda: jm.maxpool((8, 8, 1), levels=2, steps=1, hidden=4, pool_hidden=4,
                                         dtype=MODEL_DTYPE), (8, 8, 1)),
    "max_pool": (lambda: jb.MaxPool2d(hidden=4), (4, 4, 2)),
    "slice_vector": (lambda: jb.Slice(keep=2, hidden=(8,)), (4,)),
    "slice_image": (lambda: jb.Slice(keep=1, event_ndims=3, hidden=4), (4, 4, 2)),
    "absolute_learned": (lambda: jb.AbsoluteValue(learned_signs=True, hidden=(8,)), (4,)),
    "absolute_learned_image": (
        lambda: jb.AbsoluteValue(event_ndims=3, learned_signs=True, hidden=4), (4, 4, 2)),
    "sort": (lambda: jb.Sort(), (5,)),
}


SLOW_SURJECTIONS = {"model_maxpool"}
"""Whole models that take 7-10 s per check: in the full suite (its layer, max_pool, is fast)."""


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_SURJECTIONS
                                     else []) for name in sorted(SURJECTIONS)])
def surjection(request):
    make, shape = SURJECTIONS[request.param]
    x = 0.5 + 1.5 * jax.random.normal(jax.random.key(1), (3, *shape), DTYPE)
    module = make()
    variables, fwd = _init_apply(module, x, {SAMPLE: jax.random.key(2)})
    return module, variables, fwd, x


@pytest.mark.float64
def test_inference_surjection_declarations(surjection):
    module, *_ = surjection
    assert module.kind == Kind.INFERENCE_SURJECTION and module.estimate == Estimate.EXACT
    assert module.rng_streams == {SAMPLE}  # the generative direction draws the signs


@pytest.mark.float64
def test_inference_surjection_forward_is_deterministic(surjection):
    module, variables, fwd, x = surjection
    z1, c1 = fwd(x)  # no RNG stream needed in the data-to-latent direction
    z2, c2 = module.apply(variables, x, method="forward_and_log_det",
                          rngs={SAMPLE: jax.random.key(9)})
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_array_equal(c1, c2)
    zj, cj = jax.jit(fwd)(x)
    np.testing.assert_allclose(zj, z1, rtol=TOL, atol=TOL)
    zv, cv = jax.vmap(fwd)(x)
    np.testing.assert_allclose(zv, z1, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(cv, c1, rtol=TOL, atol=TOL)


@pytest.mark.float64
def test_inference_surjection_round_trip_on_the_image_of_the_inverse(surjection):
    module, variables, fwd, x = surjection
    z, _ = fwd(x)
    for seed in range(3):
        x_back = module.apply(variables, z, method="inverse", rngs={SAMPLE: jax.random.key(seed)})
        np.testing.assert_allclose(fwd(x_back)[0], z, rtol=10 * TOL, atol=10 * TOL)
    draws = [module.apply(variables, z, method="inverse", rngs={SAMPLE: jax.random.key(s)})
             for s in (0, 1)]
    assert not np.allclose(draws[0], draws[1])  # a preimage is drawn, not fixed
    with pytest.raises(MissingRngError, match="'sample'"):
        module.apply(variables, z, method="inverse")
    with pytest.raises(NotBijectiveError, match="not a bijection"):
        module.apply(variables, z, method="inverse_and_log_det", rngs={SAMPLE: jax.random.key(0)})


@pytest.mark.float64
def test_absolute_value_contribution_is_minus_d_log_2():
    for shape in ((4,), (4, 4, 2)):
        x = jax.random.normal(jax.random.key(3), (2, 5, *shape), DTYPE)
        layer = jb.AbsoluteValue(event_ndims=len(shape))
        z, contribution = layer.apply({}, x)
        np.testing.assert_array_equal(z, jnp.abs(x))
        assert contribution.shape == (2, 5)
        np.testing.assert_allclose(contribution, -math.prod(shape) * math.log(2.0), rtol=TOL)


@pytest.mark.float64
def test_absolute_value_gives_the_exact_density_of_symmetric_data():
    """|x| of x ~ N(0, s^2) is half-normal; with a half-normal base the model density is
    exactly N(x; 0, s^2): log p_half(|x|) - log 2 (one dimension)."""
    s = 1.7
    x = jnp.linspace(-4.0, 4.0, 9, dtype=DTYPE)[:, None]
    z, contribution = jb.AbsoluteValue().apply({}, x)
    log_half_normal = math.log(2.0) + jax.scipy.stats.norm.logpdf(z[:, 0], scale=s)
    exact = jax.scipy.stats.norm.logpdf(x[:, 0], scale=s)
    np.testing.assert_allclose(log_half_normal + contribution, exact, rtol=TOL, atol=TOL)


# --- stochastic layers ---------------------------------------------------------------------

LEVELS = 17
DIGITS = (8, 8, 1)


class StochasticCase(NamedTuple):
    """A stochastic layer or model for the checks below.

    ``make`` builds it; ``shape`` is one event's; ``data`` is ``"levels"`` (integer levels
    ``0 .. LEVELS-1``) or ``"real"`` (Gaussian draws); ``stream`` is the data-to-latent stream
    it draws from; ``slow`` marks cases that compile a whole model.
    """

    make: Callable[[], Any]
    shape: tuple[int, ...]
    data: str = "levels"
    stream: str = DEQUANT
    slow: bool = False


STOCHASTIC = {
    "dequantization": StochasticCase(lambda: jb.UniformDequantization(levels=LEVELS), (4, 4, 2)),
    "lattice_dequantization": StochasticCase(
        lambda: jb.LatticeDequantization(columns=(0, 2), offsets=(0.0, 0.0), spacings=(1.0, 1.0),
                                         levels=(LEVELS, LEVELS)), (4,)),
    "variational_dequantization": StochasticCase(
        lambda: jb.VariationalDequantization(levels=LEVELS, hidden=4, n_couplings=2), (4, 4, 2)),
    "chain_dequantization_scaling": StochasticCase(
        lambda: jb.Chain(jm.image_preprocessing(LEVELS, logit_alpha=0.05)), (4, 4, 2)),
    "model_augmented": StochasticCase(
        lambda: jm.augmented((3,), augment=2, n_couplings=2, hidden=(8,), q_hidden=(4,),
                             dtype=MODEL_DTYPE), (3,), data="real", stream=NOISE),
    "model_glow_variational": StochasticCase(
        lambda: jm.glow(DIGITS, levels=2, steps=1, hidden=4, dtype=MODEL_DTYPE,
                        preprocessing=jm.image_preprocessing(LEVELS, dequantization="variational")),
        DIGITS, slow=True),
    "model_glow_digits": StochasticCase(
        lambda: jm.glow(DIGITS, levels=2, steps=1, hidden=4,
                        preprocessing=jm.image_preprocessing(LEVELS),
                        dtype="float64" if X64 else "float32"), DIGITS, slow=True),
    "model_cif_realnvp": StochasticCase(
        lambda: jm.cif((3,), layers=2, hidden=(8,), index_hidden=(4,), dtype=MODEL_DTYPE),
        (3,), data="real", stream=NOISE),
    "model_cif_resflow": StochasticCase(
        lambda: jm.cif((3,), base_model="resflow", layers=1, hidden=(8,), index_hidden=(4,),
                       logdet="exact", dtype=MODEL_DTYPE),
        (3,), data="real", stream=NOISE, slow=True),
    "indexed_bijection_image": StochasticCase(
        lambda: jb.IndexedBijection(jb.ActNorm(event_ndims=3), index_dims=1, event_ndims=3,
                                    hidden=4), (4, 4, 2), data="real", stream=NOISE),
    "augment_vector": StochasticCase(
        lambda: jb.Augment(features=2, hidden=(8,)), (3,), data="real", stream=NOISE),
    "augment_image": StochasticCase(
        lambda: jb.Augment(features=1, event_ndims=3, hidden=4), (4, 4, 2), data="real",
        stream=NOISE),
    "stochastic_permutation": StochasticCase(
        lambda: jb.StochasticPermutation(), (5,), data="real", stream=NOISE),
}


def _perturbed(variables, scale=0.1):
    """Every parameter moved by ``N(0, scale^2)`` noise (the other collections kept)."""
    params = variables.get("params", {})
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(42), max(len(leaves), 1))
    moved = [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    return {**variables, "params": jax.tree.unflatten(tree, moved)} if leaves else variables


def _levels(shape, batch=3, seed=4):
    k = np.random.default_rng(seed).integers(0, LEVELS, (batch, *shape))
    return jnp.asarray(k, jnp.uint8)


def _case_input(case: StochasticCase, batch=3, seed=4):
    if case.data == "levels":
        return _levels(case.shape, batch, seed)
    return jax.random.normal(jax.random.key(seed), (batch, *case.shape), DTYPE)


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.slow] if case.slow else [])
                        for name, case in sorted(STOCHASTIC.items())])
def stochastic(request):
    case = STOCHASTIC[request.param]
    module = case.make()
    k = _case_input(case)
    method = "log_prob" if isinstance(module, jm.Flow) else "forward_and_log_det"
    variables = module.init({"params": jax.random.key(0), case.stream: jax.random.key(1)}, k,
                            method=method)
    variables = _perturbed(variables)  # zero-initialised conditionals make some bounds tight

    def call(x, key):
        return module.apply(variables, x, method=method, rngs={case.stream: key})

    call.stream = case.stream
    return module, call, k


@pytest.mark.float64
def test_stochastic_declarations(stochastic):
    module, call, _ = stochastic
    assert module.kind == Kind.STOCHASTIC and module.estimate == Estimate.BOUND
    assert call.stream in module.rng_streams


@pytest.mark.float64
def test_stochastic_is_deterministic_for_a_fixed_key(stochastic):
    _, call, k = stochastic
    a, b, c = call(k, jax.random.key(5)), call(k, jax.random.key(5)), call(k, jax.random.key(6))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.allclose(jax.tree.leaves(a)[0], jax.tree.leaves(c)[0])


@pytest.mark.float64
def test_stochastic_jit_and_vmap_equal_per_key(stochastic):
    _, call, k = stochastic
    key = jax.random.key(7)
    eager = call(k, key)
    jitted = jax.jit(call)(k, key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL), eager, jitted)
    keys = jax.random.split(jax.random.key(8), len(k))
    vmapped = jax.jit(jax.vmap(call))(k, keys)
    singles = [call(k[i], keys[i]) for i in range(len(k))]
    for i, single in enumerate(singles):
        jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(
            a[i], b, rtol=10 * TOL, atol=10 * TOL), vmapped, single)


@pytest.mark.float64
def test_stochastic_needs_its_stream():
    with pytest.raises(MissingRngError, match="'dequant'"):
        jb.UniformDequantization().apply({}, _levels((4, 4, 2)))


@pytest.mark.float64
def test_dequantization_generative_direction_recovers_the_levels():
    layer = jb.UniformDequantization(levels=LEVELS)
    k = _levels((4, 4, 2), batch=50)
    z, contribution = layer.apply({}, k, rngs={DEQUANT: jax.random.key(0)})
    assert bool(jnp.all((z >= k) & (z < k.astype(z.dtype) + 1)))
    np.testing.assert_array_equal(contribution, 0.0)
    np.testing.assert_array_equal(layer.apply({}, z, method="inverse"), k)
    np.testing.assert_array_equal(layer.apply({}, z + 40.0, method="inverse"), LEVELS - 1)


@pytest.mark.float64
def test_dequantized_log_prob_is_a_lower_bound_on_the_discrete_log_likelihood():
    """On 2-D data with 4 levels, log P(k) = log of the integral of p(k + u) over the unit square
    and E_u[log p(k + u)] are computed by quadrature; the bound holds (Jensen), and the model's
    log_prob averaged over keys estimates E_u[log p(k + u)] (tolerance from its standard error)."""
    flow = jm.Flow(
        jb.Chain([jb.UniformDequantization(event_ndims=1, levels=4),
                  jb.FixedAffine(shift=(-2.0, -1.5), scale=(0.8, 1.1))]),
        jm.StandardNormal((2,), dtype=DTYPE), (2,), dtype=DTYPE)
    assert flow.estimate == Estimate.BOUND
    levels = jnp.array([[0, 0], [1, 3], [2, 2], [3, 0]])

    def log_p_continuous(y):  # the same model without the dequantization layer
        z = (y + jnp.array([-2.0, -1.5])) * jnp.array([0.8, 1.1])
        return jax.scipy.stats.norm.logpdf(z).sum(-1) + math.log(0.8 * 1.1)

    n = 400  # midpoint rule on the unit square
    grid = (jnp.arange(n, dtype=DTYPE) + 0.5) / n
    u = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    logp = jax.vmap(lambda k: log_p_continuous(k + u))(levels.astype(DTYPE))  # (4, n*n)
    exact = jax.scipy.special.logsumexp(logp, axis=1) - math.log(n * n)  # log P(k)
    expected_bound = logp.mean(axis=1)  # E_u[log p(k + u)]
    assert bool(jnp.all(expected_bound < exact - 1e-3))

    m = 4000
    keys = jax.random.split(jax.random.key(11), m)
    draws = jax.jit(jax.vmap(lambda key: flow.apply(
        {}, levels, method="log_prob", rngs={DEQUANT: key})))(keys)  # (m, 4)
    mean = np.asarray(draws.mean(0), np.float64)
    stderr = np.asarray(draws.std(0), np.float64) / math.sqrt(m)
    assert np.all(np.abs(mean - np.asarray(expected_bound)) < 4 * stderr + 1e-4)
    assert np.all(mean + 4 * stderr < np.asarray(exact))


# --- containers derive their declarations; a Stack splits every declared stream -----------

class NoisyShift(Layer):
    """A test-only stochastic layer: ``x + u``, ``u ~ U[0, 1)`` from the ``noise`` stream,
    recorded in ``diagnostics``."""

    layer_kind: ClassVar[Kind] = Kind.STOCHASTIC
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({NOISE})

    def forward_and_log_det(self, x, context=None):
        u = jax.random.uniform(self.make_rng(NOISE), x.shape, x.dtype)
        self.sow(DIAGNOSTICS, "u", u)
        return x + u, jnp.zeros(x.shape[:-1], x.dtype)

    def inverse(self, z, context=None):
        return z


def test_containers_derive_kind_estimate_and_streams():
    residual = jb.ResidualBlock(jb.LipschitzMLP((8,)), logdet="roulette")
    series = jb.ResidualBlock(jb.LipschitzMLP((8,)), logdet="series")
    assert residual.estimate == Estimate.UNBIASED and residual.rng_streams == {LOGDET}
    assert series.estimate == Estimate.BIASED
    chain = jb.Chain([jb.ActNorm(), residual])
    assert chain.kind == Kind.BIJECTION and chain.estimate == Estimate.UNBIASED
    mixed = jb.Chain([jb.UniformDequantization(event_ndims=1), jb.AbsoluteValue(), chain])
    assert mixed.kind == Kind.STOCHASTIC and mixed.estimate == Estimate.BOUND
    assert mixed.rng_streams == {DEQUANT, SAMPLE, LOGDET}
    stack = jb.Stack(lambda: jb.Chain([jb.ActNorm(), NoisyShift()]), length=2)
    assert stack.kind == Kind.STOCHASTIC and stack.rng_streams == {NOISE}
    assert jb.FactorOut(stack).rng_streams == {NOISE}
    assert not stack.conditional and jb.SplitCoupling(use_context=True).conditional
    with pytest.raises(NotBijectiveError):
        jb.Inverse(jb.AbsoluteValue())


def test_stochastic_layer_in_a_stack_draws_different_noise_in_every_block():
    stack = jb.Stack(NoisyShift, length=4)
    x = jnp.zeros((2, 3))
    rngs = {NOISE: jax.random.key(0)}
    variables = stack.init({"params": jax.random.key(1), **rngs}, x)
    variables = {k: v for k, v in variables.items() if k != DIAGNOSTICS}
    (z, _), state = stack.apply(variables, x, rngs=rngs, mutable=[DIAGNOSTICS])
    (u,) = state[DIAGNOSTICS]["layers"]["block"]["u"]
    assert u.shape == (4, 2, 3)
    for i in range(4):
        for j in range(i):
            assert not np.allclose(u[i], u[j]), f"blocks {j} and {i} drew the same noise"
    np.testing.assert_allclose(z, u.sum(0), rtol=1e-6)
