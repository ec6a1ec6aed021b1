"""jflows.evaluate_log_prob: batched log_prob of large arrays, one compilation per batch shape."""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import pytest

import jflows
from jflows import models
from jflows.errors import ConfigError, MissingRngError, ShapeError

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations():
    """Counts XLA compilations (every ``jit`` cache miss ends in one) inside the block."""
    count = [0]

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def rows(n, d=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def realnvp():
    flow = models.realnvp((2,), n_couplings=2, hidden=(8,))
    variables = flow.init(jax.random.key(0), rows(64), method="log_prob")
    # non-zero last layers, so the flow is not the identity
    variables = jax.tree.map(lambda a: a + 0.1, variables)
    return flow, variables


def test_equals_the_unbatched_log_prob(realnvp):
    flow, variables = realnvp
    x = rows(25)
    got = jflows.evaluate_log_prob(flow, variables, x, batch_size=10)
    want = np.asarray(flow.apply(variables, x, method="log_prob"))
    assert got.shape == (25,) and isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert jflows.evaluate_log_prob(flow, variables, x[:0], batch_size=10).shape == (0,)


def test_compiles_once_whatever_the_last_batch():
    flow = models.realnvp((2,), n_couplings=2, hidden=(4,))  # a new flow: a cold cache
    variables = flow.init(jax.random.key(0), rows(8), method="log_prob")
    with count_compilations() as first:
        jflows.evaluate_log_prob(flow, variables, rows(25), batch_size=10)  # 10 + 10 + 5
    with count_compilations() as again:
        jflows.evaluate_log_prob(flow, variables, rows(13), batch_size=10)  # 10 + 3
        jflows.evaluate_log_prob(flow, variables, rows(7), batch_size=10)  # 7
    assert first[0] == 1, f"{first[0]} compilations for 25 rows in batches of 10"
    assert again[0] == 0, f"{again[0]} compilations for new partial batches"


def test_conditional_flow_reads_one_context_row_per_row():
    flow = models.realnvp((2,), n_couplings=2, hidden=(8,), context_shape=(1,))
    x, c = rows(23), rows(23, d=1, seed=1)
    variables = flow.init(jax.random.key(0), x, c, method="log_prob")
    variables = jax.tree.map(lambda a: a + 0.1, variables)
    got = jflows.evaluate_log_prob(flow, variables, x, batch_size=8, context=c)
    want = np.asarray(flow.apply(variables, x, c, method="log_prob"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    one = jflows.evaluate_log_prob(flow, variables, x, batch_size=8, context=c[0])
    np.testing.assert_allclose(one, flow.apply(variables, x, np.repeat(c[:1], 23, 0),
                                               method="log_prob"), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_images_and_stochastic_layers_are_deterministic_given_the_key():
    flow = models.realnvp((4, 4, 1), n_couplings=2, hidden=8,
                          preprocessing=models.image_preprocessing(4))
    levels = np.random.default_rng(0).integers(0, 4, (11, 4, 4, 1)).astype(np.uint8)
    variables = flow.init({"params": jax.random.key(0), "dequant": jax.random.key(1)},
                          levels, method="log_prob")
    with pytest.raises(MissingRngError, match="key=jax.random.key"):
        jflows.evaluate_log_prob(flow, variables, levels, batch_size=4)
    a = jflows.evaluate_log_prob(flow, variables, levels, batch_size=4, key=jax.random.key(3))
    b = jflows.evaluate_log_prob(flow, variables, levels, batch_size=4, key=jax.random.key(3))
    c = jflows.evaluate_log_prob(flow, variables, levels, batch_size=4, key=jax.random.key(4))
    assert a.shape == (11,) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)  # other dequantization draws


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(x=rows(5, d=3)), ShapeError, r"\(n, 2,\), got \(5, 3\)"),
        (dict(x=rows(5)[0]), ShapeError, r"got \(2,\).*x\[None\]"),
        (dict(batch_size=0), ConfigError, "batch_size must be an int >= 1.*got 0"),
        (dict(batch_size=2.5), ConfigError, "got 2.5"),
        (dict(context=rows(5, d=1)), ShapeError, "no conditional layer"),
    ],
)
def test_bad_input_names_the_value_and_the_fix(realnvp, kwargs, error, match):
    flow, variables = realnvp
    args = {"x": rows(5), "batch_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        jflows.evaluate_log_prob(flow, variables, **args)


def test_context_rows_must_match():
    flow = models.realnvp((2,), n_couplings=2, hidden=(4,), context_shape=(1,))
    variables = flow.init(jax.random.key(0), rows(4), rows(4, d=1), method="log_prob")
    with pytest.raises(ShapeError, match="context has 3 rows .* but x has 5"):
        jflows.evaluate_log_prob(flow, variables, rows(5), 2, context=rows(3, d=1))
    with pytest.raises(ShapeError, match="conditional .* pass context="):
        jflows.evaluate_log_prob(flow, variables, rows(5), 2)
