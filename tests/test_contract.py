"""The shared contract suite: every registered bijector and model satisfies the same checks.

Run once as is (float32); the exactness checks (round trip, brute-force log-det, dtype) run again
round trip, log-det against brute-force ``slogdet(jax.jacfwd(...))``, ``forward`` against
``forward_and_log_det``, jit against no jit, batched against vmapped single events, dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import CASES, Case

from jflows.models import MODELS, Flow
from jflows.names import LIPSCHITZ, LOGDET, PARAMS, SAMPLE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
BATCH = 3


def _data(case: Case, key, batch=BATCH):
    shape = (batch, *case.event_shape)
    if case.uniform is not None:
        lo, hi = case.uniform
        return lo + (hi - lo) * jax.random.uniform(key, shape, DTYPE, 0.02, 0.98)
    return case.loc + case.scale * jax.random.normal(key, shape, DTYPE)


def _rngs(seed=0):
    return {LOGDET: jax.random.key(seed + 1), SAMPLE: jax.random.key(seed + 2)}


class Harness:
    """Builds one case and caches the jitted results every check compares against."""

    def __init__(self, case: Case):
        self.case = case
        self.module = module = case.make()
        assert module.kind.name == "BIJECTION", f"{case.name}: not a bijection ({module.kind})"
        x_init = _data(case, jax.random.key(0), batch=16)
        # a model is initialised as users do (through log_prob, which creates a learned base)
        method = "log_prob" if isinstance(module, Flow) else "forward_and_log_det"
        init = jax.jit(lambda rngs, x: module.init(rngs, *self.args(x), method=method))
        variables = init({PARAMS: jax.random.key(1), **_rngs()}, x_init)
        # perturb the trainable parameters only (constants and power-iteration state stay)
        leaves, treedef = jax.tree.flatten(variables.get(PARAMS, {}))
        keys = jax.random.split(jax.random.key(7), max(len(leaves), 1))
        leaves = [leaf + case.perturb * jax.random.normal(k, leaf.shape, leaf.dtype)
                  for leaf, k in zip(leaves, keys)]
        self.variables = {**variables, PARAMS: jax.tree.unflatten(treedef, leaves)}
        if LIPSCHITZ in self.variables:  # re-converge the power iteration for the new weights
            refresh = jax.jit(lambda v, e: module.apply(
                v, *self.args(e), method="forward_and_log_det", rngs=_rngs(),
                mutable=[LIPSCHITZ])[1])
            for _ in range(10):
                self.variables = {**self.variables, **refresh(self.variables, x_init)}
        self.x = _data(case, jax.random.key(2))
        self.fwd = jax.jit(lambda v, e: self.apply(v, e, "forward_and_log_det"))
        self.inv = jax.jit(lambda v, e: self.apply(v, e, "inverse_and_log_det"))
        self.z, self.ld = self.fwd(self.variables, self.x)

    def context(self, batch_shape=()):
        """The fixed context of a conditional case, with ``batch_shape`` in front."""
        k = self.case.context
        c0 = jnp.linspace(-1.0, 1.0, math.prod(k), dtype=DTYPE).reshape(k)
        return jnp.broadcast_to(c0, (*batch_shape, *k))

    def args(self, x):
        """``(x,)``, or ``(x, context)`` for a conditional case."""
        if self.case.context is None:
            return (x,)
        return (x, self.context(x.shape[: x.ndim - len(self.case.event_shape)]))

    def sample_kwargs(self):
        return {} if self.case.context is None else {"context": self.context()}

    def apply(self, variables, x, method):
        return self.module.apply(variables, *self.args(x), method=method, rngs=_rngs())

    def tol(self, scale=1.0):
        return (1e-9 if X64 else self.case.rtol32) * scale


_HARNESSES: dict[str, Harness] = {}


def _harness(case: Case) -> Harness:
    """One harness per case and worker, shared by the fixtures below."""
    if case.name not in _HARNESSES:
        _HARNESSES[case.name] = Harness(case)
    return _HARNESSES[case.name]


# The heaviest cases (image models, residual models: seconds of compilation per check) run in the
# full suite only; ``pytest -m "not slow"`` keeps every bijector and the small vector models.
SLOW_CASES = {
    "model_realnvp_image", "model_realnvp_image_digits", "model_glow_small", "model_glow_digits",
    "model_resflow_vector", "model_iresnet_vector", "model_resflow_image", "model_iresnet_image",
    "model_nice_image", "model_mintnet_small", "model_nsf_image",
    # covered fast by spline_coupling_conditional and tests/test_spline_coupling.py
    "model_nsf_vector_conditional", "spline_coupling_parity1_narrow",
    # masked autoregressive: the fast suite keeps every layer kind and direction
    "model_iaf_spline", "model_maf_spline_random", "model_maf_conditional",
    "maf_spline_conditional",
    # the vector models built from layers the fast suite checks one by one (CI time)
    "model_nsf_vector", "model_maf", "model_iaf",
}


def _params(cases):
    # one xdist group per case, so with ``--dist loadgroup`` each case is built on one worker
    def marks(c):
        group = pytest.mark.xdist_group(c.name)
        return (group, pytest.mark.slow) if c.name in SLOW_CASES else (group,)

    return dict(
        params=[pytest.param(c, marks=marks(c)) for c in cases],
        ids=[c.name for c in cases],
    )


MODEL_CASES = [c for c in CASES if c.name.startswith("model_")]
EXACT_CASES = [c for c in CASES if c.exact_logdet]


@pytest.fixture(scope="module", **_params(CASES))
def h(request) -> Harness:
    """Every registered bijector and model."""
    return _harness(request.param)


@pytest.fixture(scope="module", **_params(EXACT_CASES))
def h_exact(request) -> Harness:
    """The cases with an exact log-det (stochastic ones have their statistical tests)."""
    return _harness(request.param)


@pytest.fixture(scope="module", **_params(MODEL_CASES))
def h_model(request) -> Harness:
    """The registered models (``Flow``s)."""
    return _harness(request.param)


def close(a, b, tol, atol_scale=1.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * atol_scale)


# ``float64``: the exactness checks that .ci/run repeats with JAX_ENABLE_X64=1
@pytest.mark.float64
def test_round_trip(h):
    assert h.ld.shape == (BATCH,)
    if h.case.same_shape:
        assert h.z.shape == h.x.shape
    xr, ld_inv = h.inv(h.variables, h.z)
    close(xr, h.x, h.tol(10))
    close(ld_inv, -h.ld, h.tol(10))


@pytest.mark.float64
def test_logdet_matches_brute_force(h_exact):
    h = h_exact
    shape = h.case.event_shape
    d = math.prod(shape)

    def flat_forward(e):
        return h.apply(h.variables, e.reshape(shape), "forward").reshape(d)

    jac = jax.jit(jax.vmap(jax.jacfwd(flat_forward)))(h.x.reshape(BATCH, d))
    sign, brute = jnp.linalg.slogdet(jac)
    assert np.all(np.asarray(sign) != 0)
    close(h.ld, brute, h.tol(5), atol_scale=10)


def test_forward_matches_forward_and_log_det(h):
    z = jax.jit(lambda v, e: h.apply(v, e, "forward"))(h.variables, h.x)
    close(z, h.z, h.tol(0.1))
    xr = jax.jit(lambda v, e: h.apply(v, e, "inverse"))(h.variables, h.z)
    xr2, _ = h.inv(h.variables, h.z)
    close(xr, xr2, h.tol(0.1))


def test_jit_matches_no_jit(h):
    z, ld = h.apply(h.variables, h.x, "forward_and_log_det")
    close(z, h.z, h.tol())
    close(ld, h.ld, h.tol(), atol_scale=10)
    xr, ldi = h.apply(h.variables, h.z, "inverse_and_log_det")
    xr2, ldi2 = h.inv(h.variables, h.z)
    close(xr, xr2, h.tol())
    close(ldi, ldi2, h.tol(), atol_scale=10)


def test_batch_matches_vmap_and_single_events(h):
    zv, ldv = jax.jit(jax.vmap(lambda e: h.apply(h.variables, e, "forward_and_log_det")))(h.x)
    close(zv, h.z, h.tol())
    close(ldv, h.ld, h.tol(), atol_scale=10)
    z0, ld0 = h.fwd(h.variables, h.x[0])  # one event, no batch axis
    assert ld0.shape == ()
    close(z0, h.z[0], h.tol())
    x2 = jnp.stack([h.x, h.x[::-1]])  # two batch axes
    z2, ld2 = h.fwd(h.variables, x2)
    assert ld2.shape == (2, BATCH)
    close(ld2[0], h.ld, h.tol(), atol_scale=10)
    close(ld2[1], h.ld[::-1], h.tol(), atol_scale=10)


@pytest.mark.float64
def test_dtype_is_kept(h):
    assert h.z.dtype == DTYPE and h.ld.dtype == DTYPE


def _is_flow(h) -> bool:
    return isinstance(h.module, Flow)


@pytest.mark.float64
def test_every_registered_model_is_in_the_suite():
    from test_contract_kinds import STOCHASTIC, SURJECTIONS  # the non-bijective models

    names = [c.name for c in CASES] + list(SURJECTIONS) + list(STOCHASTIC)
    covered = {name.split("_")[1] for name in names if name.startswith("model_")}
    assert set(MODELS) <= covered, f"models without a contract case: {set(MODELS) - covered}"


@pytest.mark.float64
def test_model_samples_have_the_model_dtype(h_model):
    """``sample`` draws in the model's dtype (float64 in the float64 pass), finite values."""
    h = h_model
    assert _is_flow(h)
    n = 5
    x = jax.jit(lambda v: h.module.apply(
        v, n, method="sample", rngs=_rngs(3), **h.sample_kwargs()))(h.variables)
    assert x.shape == (n, *h.case.event_shape) and x.dtype == DTYPE
    assert bool(jnp.all(jnp.isfinite(x)))


@pytest.mark.float64
def test_model_sample_and_log_prob_matches_log_prob(h_model):
    """``sample_and_log_prob`` returns the samples of ``sample`` and their ``log_prob``."""
    h = h_model
    assert _is_flow(h)
    n = 5
    xs, lp = jax.jit(lambda v: h.module.apply(
        v, n, method="sample_and_log_prob", rngs=_rngs(3), **h.sample_kwargs()))(h.variables)
    assert xs.dtype == DTYPE and lp.dtype == DTYPE and lp.shape == (n,)
    assert bool(jnp.all(jnp.isfinite(xs))) and bool(jnp.all(jnp.isfinite(lp)))
    x = jax.jit(lambda v: h.module.apply(
        v, n, method="sample", rngs=_rngs(3), **h.sample_kwargs()))(h.variables)
    close(xs, x, h.tol())
    if h.case.exact_logdet:
        lp2 = jax.jit(lambda v, e: h.apply(v, e, "log_prob"))(h.variables, xs)
        close(lp, lp2, h.tol(50), atol_scale=10)
