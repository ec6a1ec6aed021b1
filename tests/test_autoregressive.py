"""MADE and the masked autoregressive layers and models (MAF, IAF).

The autoregressive property is checked exactly: the Jacobian of MADE's outputs at position ``d``
with respect to every input of degree ``>= deg(d)`` is exactly zero, for several widths, orders
and hidden degree assignments, with and without context. The contract suite
(``tests/registry.py``) covers round trips and log-dets of the layers and models; this file
adds the sequential direction's structure (one loop, not a Python loop), exactness in float64,
identity at initialisation, conditioning and errors.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import bijectors as jb
from jflows import models as jm
from jflows.errors import ConfigError, ShapeError
from jflows.kernels.made import hidden_degrees, input_degrees
from jflows.names import PARAMS, SAMPLE

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32


def _perturbed(variables, scale=0.5, seed=3):
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    )


MADE_CASES = [
    # dim, hidden, order, degrees, context features
    (1, (4,), "natural", "cycle", 0),
    (1, (4,), "natural", "cycle", 2),
    (2, (), "natural", "cycle", 0),
    (3, (5,), "reverse", "cycle", 0),
    (4, (8, 8), "natural", "cycle", 0),
    (4, (3, 7), (2, 0, 3, 1), "random", 0),
    (5, (16, 16, 16), (4, 1, 0, 3, 2), "cycle", 3),
    (6, (2, 9), "reverse", "random", 2),
]


@pytest.mark.parametrize(("dim", "hidden", "order", "degrees", "ctx"), MADE_CASES)
def test_made_outputs_ignore_inputs_of_equal_or_later_degree(dim, hidden, order, degrees, ctx):
    made = jb.MADE(hidden, order=order, degrees=degrees, seed=4, activation="tanh")
    num = 3
    x = jax.random.normal(jax.random.key(0), (dim,), DTYPE)
    c = jnp.linspace(-1.0, 1.0, ctx, dtype=DTYPE) if ctx else None
    variables = _perturbed(made.init(jax.random.key(1), x, num, c))
    jac = jax.jacfwd(lambda e: made.apply(variables, e, num, c))(x)  # (D, P, D)
    assert jac.shape == (dim, num, dim)
    deg = input_degrees(dim, order)
    later = deg[None, :] >= deg[:, None]  # [d, j]: input j may not reach output d
    forbidden = np.asarray(jac).transpose(0, 2, 1)[later]
    assert np.all(forbidden == 0.0)  # exactly, not approximately
    # every allowed link of the next degree is really used (tanh units, widths >= D - 1)
    if all(w >= dim - 1 for w in hidden) and degrees == "cycle" and hidden:
        nxt = deg[None, :] == deg[:, None] - 1
        assert np.all(np.abs(np.asarray(jac).transpose(0, 2, 1)[nxt]) > 0)
    if ctx and degrees == "cycle":  # the context reaches every output (degree-0 units)
        jc = jax.jacfwd(lambda cc: made.apply(variables, x, num, cc))(c)
        assert np.all(np.abs(np.asarray(jc)).sum(-1) > 0)


def test_hidden_degrees_lie_in_one_to_d_minus_one_and_are_seeded():
    for mode in ("cycle", "random"):
        for layer in hidden_degrees(5, (7, 3, 9), mode, seed=2):
            assert layer.min() >= 1 and layer.max() <= 4
    a, b = hidden_degrees(6, (10, 10), "random", 1), hidden_degrees(6, (10, 10), "random", 1)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert [d.tolist() for d in hidden_degrees(1, (3,))] == [[0, 0, 0]]


def test_made_refuses_bad_settings():
    with pytest.raises(ConfigError, match="permutation of range\\(3\\)"):
        jb.MADE((4,), order=(0, 0, 1)).init(jax.random.key(0), jnp.ones(3), 2)
    with pytest.raises(ConfigError, match="degrees='spread'"):
        jb.MADE((4,), degrees="spread")
    with pytest.raises(ConfigError, match="hidden widths"):
        jb.MADE((4, 0))


LAYERS = [(t, d) for t in ("affine", "spline") for d in ("maf", "iaf")]


@pytest.mark.parametrize(("transform", "direction"), LAYERS)
def test_layer_starts_as_the_identity(transform, direction):
    layer = jb.MaskedAutoregressive(jb.MADE((8,)), transform=transform, direction=direction)
    x = jax.random.normal(jax.random.key(0), (3, 4), DTYPE)
    variables = layer.init(jax.random.key(1), x)
    for method in ("forward_and_log_det", "inverse_and_log_det"):
        y, logdet = layer.apply(variables, x, method=method)
        np.testing.assert_allclose(y, x, atol=1e-6)
        np.testing.assert_allclose(logdet, 0.0, atol=1e-6)


def _count_eqns(jaxpr) -> int:
    return len(jaxpr.eqns) + sum(
        _count_eqns(sub.jaxpr if hasattr(sub, "jaxpr") else sub)
        for e in jaxpr.eqns for sub in jax.extend.core.jaxprs_in_params(e.params)
    )


@pytest.mark.parametrize("direction", ["maf", pytest.param("iaf", marks=pytest.mark.slow)])
def test_sequential_direction_is_one_loop_whatever_the_dimension(direction):
    """``D`` MADE passes run in a ``fori_loop``: the program does not grow with ``D``."""
    layer = jb.MaskedAutoregressive(jb.MADE((16,)), transform="spline", direction=direction)
    method = "inverse_and_log_det" if direction == "maf" else "forward_and_log_det"
    sizes = []
    for dim in (3, 12):
        x = jnp.ones((2, dim), DTYPE)
        variables = layer.init(jax.random.key(0), x)
        jaxpr = jax.make_jaxpr(lambda v, e: layer.apply(v, e, method=method))(variables, x)
        names = {e.primitive.name for e in jaxpr.jaxpr.eqns}
        assert names & {"while", "scan"}, names
        sizes.append(_count_eqns(jaxpr.jaxpr))
    assert sizes[0] == sizes[1]


# the spline variants (seconds of compilation each) run with the release suite
EXACT_LAYERS = [pytest.param(t, d, marks=pytest.mark.slow) if t == "spline" else (t, d)
                for t, d in LAYERS]


@pytest.mark.float64
@pytest.mark.parametrize(("transform", "direction"), EXACT_LAYERS)
def test_sequential_inversion_is_exact(transform, direction):
    """After ``D`` passes the sequential direction is exact, not iterated to a tolerance."""
    dim = 6
    layer = jb.MaskedAutoregressive(jb.MADE((12, 12), order=(3, 0, 5, 1, 4, 2)),
                                    transform=transform, direction=direction, num_bins=5)
    x = 2.0 * jax.random.normal(jax.random.key(0), (7, dim), DTYPE)
    variables = _perturbed(layer.init(jax.random.key(1), x), scale=0.4)
    z, ld = layer.apply(variables, x)
    x_back, ld_back = layer.apply(variables, z, method="inverse_and_log_det")
    tol = 1e-10 if X64 else 2e-5
    np.testing.assert_allclose(x_back, x, atol=tol * 10, rtol=tol)
    np.testing.assert_allclose(ld_back, -ld, atol=tol * 10, rtol=tol)
    jac = jax.vmap(jax.jacfwd(lambda e: layer.apply(variables, e, method="forward")))(x)
    np.testing.assert_allclose(ld, jnp.linalg.slogdet(jac)[1], atol=tol * 100, rtol=tol * 10)


@pytest.mark.parametrize("direction", ["maf", "iaf"])
def test_context_changes_the_map_and_is_required(direction):
    layer = jb.MaskedAutoregressive(jb.MADE((8,)), direction=direction, use_context=True)
    assert layer.conditional
    x, c = jnp.ones((5, 3), DTYPE), jnp.zeros((5, 2), DTYPE)
    variables = _perturbed(layer.init(jax.random.key(0), x, c))
    z0 = layer.apply(variables, x, c, method="forward")
    z1 = layer.apply(variables, x, c + 1.0, method="forward")
    assert not np.allclose(z0, z1)
    one = layer.apply(variables, x, c[0], method="forward")  # one context for the whole batch
    np.testing.assert_allclose(one, z0, rtol=1e-6)
    with pytest.raises(ShapeError, match="needs a context"):
        layer.apply(variables, x)
    with pytest.raises(ShapeError, match="does not fit"):
        layer.apply(variables, x, jnp.zeros((4, 2)))


def test_layer_refuses_bad_settings():
    with pytest.raises(ConfigError, match="unknown transform 'cubic'"):
        jb.MaskedAutoregressive(transform="cubic")
    with pytest.raises(ConfigError, match="unknown direction 'both'"):
        jb.MaskedAutoregressive(direction="both")
    with pytest.raises(ConfigError, match="num_bins"):
        jb.MaskedAutoregressive(transform="spline", num_bins=0)
    with pytest.raises(ConfigError, match="needs a scale"):
        jb.MaskedAutoregressive(scale_map="none")


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_factories_refuse_images_and_bad_options(name):
    factory = jm.MODELS[name]
    with pytest.raises(ConfigError, match=f"{name} models vectors.*flatten"):
        factory((4, 4, 1))
    with pytest.raises(ConfigError, match="permutation 'shuffle'"):
        factory((3,), permutation="shuffle")
    with pytest.raises(ConfigError, match="transform 'cubic'"):
        factory((3,), transform="cubic")
    with pytest.raises(ConfigError, match="n_layers"):
        factory((3,), n_layers=0)
    with pytest.raises(ConfigError, match="scale_bound must be > 0, got 0"):
        factory((3,), scale_bound=0.0)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_factories_bound_every_affine_log_scale(name):
    """``scale_bound`` reaches every layer: with huge raw outputs |log det| = D b per layer."""
    x = jnp.ones((4, 3))
    flow = jm.MODELS[name]((3,), n_layers=2, hidden=(8,), scale_bound=0.5)
    variables = flow.init(jax.random.key(0), x)
    huge = jax.tree.map(lambda a: jnp.full_like(a, 50.0), variables["params"])
    _, log_det = flow.apply({**variables, "params": huge}, x, method="forward_and_log_det")
    assert np.allclose(np.abs(log_det), 2 * 3 * 0.5, atol=1e-4)


@pytest.mark.parametrize(("name", "transform"), [
    pytest.param("maf", "affine", marks=pytest.mark.slow), ("iaf", "affine"),
    pytest.param("iaf", "spline", marks=pytest.mark.slow),
])
def test_conditional_models_sample_score_and_train(name, transform):
    """Gradients reach every MADE weight through either direction, context included."""
    flow = jm.MODELS[name]((3,), n_layers=2, hidden=(8,), transform=transform, num_bins=4,
                           context_shape=(1,))
    x = jax.random.normal(jax.random.key(0), (6, 3))
    c = jnp.linspace(-1.0, 1.0, 6)[:, None]
    variables = flow.init(jax.random.key(1), x, c, method="log_prob")
    variables = {PARAMS: _perturbed(variables[PARAMS], scale=0.1)}

    def loss(params):
        return -jnp.mean(flow.apply({PARAMS: params}, x, c, method="log_prob"))

    grads = jax.grad(loss)(variables[PARAMS])
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0)) for g in leaves)
    xs = flow.apply(variables, 4, method="sample", context=c[0], rngs={SAMPLE: jax.random.key(2)})
    assert xs.shape == (4, 3) and bool(jnp.all(jnp.isfinite(xs)))
