"""The one training path with contexts: rows ``(x, c)``, context standardisation, build_model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jflows
from jflows.errors import ConfigError
from jflows.training import create_train_state, evaluate_nll, make_eval_step, make_train_step
from jflows.training.batches import as_args, dataset_rows, n_rows, pad_rows, take
from jflows.training.run_settings import make_run_config
from jflows.training.runs import build_model, check_conditional, conditional_models


def _pairs(n=64, seed=0):
    x, c = jflows.data.sample_conditional_toy("conditional-ring", n, seed=seed)
    return x, c


def test_rows_helpers():
    x, c = _pairs(10)
    assert n_rows((x, c)) == 10 and n_rows(x) == 10
    sub = take((x, c), np.array([3, 1]))
    np.testing.assert_array_equal(sub[1], c[[3, 1]])
    padded = pad_rows((x[:3], c[:3]), 5)
    assert padded[0].shape == (5, 2) and padded[1].shape == (5, 1)
    np.testing.assert_array_equal(padded[1][3:], np.repeat(c[:1], 2, 0))
    assert len(as_args((x, c))) == 2 and len(as_args(x)) == 1
    ds = jflows.data.load_dataset("conditional-ring", n_train=8, n_test=4)
    assert isinstance(dataset_rows(ds, "test"), tuple)
    assert not isinstance(dataset_rows(jflows.data.load_dataset("moons", n_train=8,
                                                                 n_test=4), "test"), tuple)


def test_flow_standardises_its_context():
    x, c = _pairs(16)
    flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,), context_shape=(1,))
    scaled = flow.clone(context_mean=(0.5,), context_std=(2.0,))
    variables = flow.init(jax.random.key(0), x, c, method="log_prob")
    # make the context matter: perturb every parameter
    variables = jax.tree.map(lambda a: a + 0.1 * jnp.ones_like(a), variables)
    got = scaled.apply(variables, x, c, method="log_prob")
    want = flow.apply(variables, x, (c - 0.5) / 2.0, method="log_prob")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, flow.apply(variables, x, c, method="log_prob"))


def test_steps_and_evaluation_take_x_and_context():
    x, c = _pairs(50)
    flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,), context_shape=(1,))
    state = create_train_state(flow, optax.adam(1e-2), (x, c), jax.random.key(0))
    step = make_train_step(flow, optax.adam(1e-2))
    state, metrics = step(state, (x[:32], c[:32]), jax.random.key(1))
    assert bool(metrics["finite"]) and int(state.step) == 1
    nll = evaluate_nll(make_eval_step(flow), state, (x, c), batch_size=16)  # padded last batch
    direct = -flow.apply(state.variables(), x, c, method="log_prob")
    np.testing.assert_allclose(nll, direct, rtol=1e-5, atol=1e-5)


def test_run_config_of_conditional_data_builds_a_conditional_model():
    config, dataset = make_run_config({
        "model": "realnvp", "data": "conditional-ring", "steps": 2,
        "options": {"n_couplings": 2, "hidden": (8,)},
    })
    assert config.context_shape == (1,) and config.context is None
    np.testing.assert_allclose(config.context_mean, dataset.train_context.mean(0), atol=1e-5)
    flow = build_model(config, training=False)
    assert flow.conditional and flow.context_shape == (1,)
    assert flow.context_std == config.context_std
    plain, _ = make_run_config({"model": "realnvp", "data": "moons", "steps": 2})
    assert plain.context_shape is None and not build_model(plain).conditional


def test_models_without_context_are_refused_by_name():
    assert "realnvp" in conditional_models() and "glow" not in conditional_models()
    with pytest.raises(ConfigError, match=r"model 'nice' cannot condition .* drop --context"):
        check_conditional("nice", "c.npy")
    with pytest.raises(ConfigError, match="cannot condition"):
        make_run_config({"model": "nice", "data": "conditional-ring", "steps": 2})
