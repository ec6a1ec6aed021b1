"""Hybrid models (a classifier head on a flow's latent): shapes, the loss, gradients, training."""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jflows
from jflows.errors import ConfigError, DataError
from jflows.training.hybrid import check_labels, fit_hybrid, make_hybrid_train_step
from jflows.training.state import create_train_state, init_rngs, stream_keys


def _model(d=4, n_classes=3, head_hidden=()):
    flow = jflows.models.realnvp((d,), n_couplings=2, hidden=(8,))
    return jflows.models.hybrid(flow, n_classes, head_hidden=head_hidden)


def _data(n=32, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def test_logits_shape_and_log_prob_is_the_flows():
    model = _model(head_hidden=(5,))
    x, _ = _data()
    v = model.init(jax.random.key(0), x, method="log_prob")
    assert model.apply(v, x, method="logits").shape == (32, 3)
    assert model.apply(v, x[0], method="logits").shape == (3,)
    flow_lp = model.flow.apply({"params": v["params"]["flow"]}, x, method="log_prob")
    np.testing.assert_allclose(model.apply(v, x, method="log_prob"), flow_lp, rtol=1e-6)
    assert set(v["params"]) == {"flow", "head_0", "head_out"}


def test_loss_matches_an_independent_computation():
    model, lam = _model(), 0.3
    x, y = _data()
    v = model.init(jax.random.key(0), x, method="log_prob")
    flow_v = {"params": v["params"]["flow"]}
    z = model.flow.apply(flow_v, x, method="forward")
    w, b = v["params"]["head_out"]["kernel"], v["params"]["head_out"]["bias"]
    logits = np.asarray(z, np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    log_px = np.asarray(model.flow.apply(flow_v, x, method="log_prob"), np.float64)
    expected = -np.mean(log_softmax[np.arange(len(y)), y] + lam * log_px / 4)
    got = model.apply(v, x, y, lam, method="loss")
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


@pytest.mark.slow
def test_lam_zero_is_a_pure_classifier_gradient():
    """lam=0: the flow's gradient is the classifier's only (through the head), not log p(x)'s."""
    model = _model()
    x, y = _data()
    v = model.init(jax.random.key(0), x, method="log_prob")
    params = v["params"]

    def loss(p, lam):
        return model.apply({"params": p}, x, y, lam, method="loss")

    def classifier(p):  # cross-entropy through forward + head, written out by hand
        z = model.flow.apply({"params": p["flow"]}, x, method="forward")
        logits = z @ p["head_out"]["kernel"] + p["head_out"]["bias"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])

    grad = jax.jit(jax.grad(loss))
    g0, gc = grad(params, 0.0), jax.jit(jax.grad(classifier))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(gc), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # with the head's output weights zeroed, no gradient reaches the flow at lam=0 ...
    zero_head = {**params, "head_out": jax.tree_util.tree_map(jnp.zeros_like, params["head_out"])}
    flow_grad = grad(zero_head, 0.0)["flow"]
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(flow_grad))
    # ... while lam > 0 sends log p(x)'s gradient to it
    flow_grad = grad(zero_head, 1.0)["flow"]
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(flow_grad)) > 0


def test_residual_flow_hybrid_runs_one_forward_pass_per_loss():
    flow = jflows.models.resflow((2,), n_blocks=1, hidden=(8,), logdet="exact")
    model = jflows.models.hybrid(flow, 2)
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    v = model.init(init_rngs(model, jax.random.key(0)), x, method="log_prob")
    calls = []

    def count(next_fun, args, kwargs, context):
        if isinstance(context.module, jflows.models.Flow):
            calls.append(context.method_name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(count):
        rngs = stream_keys(model, jax.random.key(1))
        loss = jax.jit(
            lambda v: model.apply(v, x, y, 0.1, method="loss", rngs=rngs, mutable=["lipschitz"])
        )
        loss(v)
    assert calls.count("forward_and_log_det") == 1
    assert "forward" not in calls and "log_prob" not in calls, calls
    assert model.estimate == flow.estimate and model.rng_streams == flow.rng_streams


def test_tiny_training_beats_chance_and_step_metrics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    model = jflows.models.hybrid(jflows.models.realnvp((2,), n_couplings=2, hidden=(16,)), 2)
    _, m = fit_hybrid(
        model, model, (x[:300], y[:300]), (x[300:], y[300:]), lam=0.1, steps=80, lr=1e-2
    )
    assert m["test_accuracy"] > 0.8, m
    assert math.isfinite(m["test_bits_per_dim"]) and m["nonfinite_steps"] == 0


def test_train_step_skips_nonfinite_batches():
    model = _model()
    x, y = _data()
    opt = optax.adam(1e-3)
    state = create_train_state(model, opt, x, jax.random.key(0))
    step = make_hybrid_train_step(model, opt, lam=1.0)
    bad = x.copy()
    bad[0, 0] = np.nan
    before = jax.tree_util.tree_map(np.asarray, state.params)
    state, metrics = step(state, (bad, y), jax.random.key(1))
    assert not bool(metrics["finite"]) and int(state.nonfinite_steps) == 1
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(state.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_raise():
    flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
    with pytest.raises(ConfigError, match="n_classes"):
        jflows.models.hybrid(flow, 1)
    with pytest.raises(ConfigError, match="lambda"):
        make_hybrid_train_step(jflows.models.hybrid(flow, 2), optax.adam(1e-3), lam=-1.0)
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(DataError, match="0..1"):
        check_labels(x, np.array([0, 1, 2]), 2)
    with pytest.raises(DataError, match="integers"):
        check_labels(x, np.array([0.0, 1.0, 1.0]), 2)


def test_npy_labels_are_split_with_the_rows(tmp_path):
    from jflows.data import load_dataset
    from jflows.data.labels import load_labels

    x = np.stack([np.arange(50.0), np.zeros(50)], 1).astype(np.float32)
    np.save(tmp_path / "d.npy", x)
    np.save(tmp_path / "d_labels.npy", np.arange(50) % 3)
    ds = load_dataset(tmp_path / "d.npy", seed=7, test_fraction=0.2)
    ytr, yte = load_labels(str(tmp_path / "d.npy"), seed=7, test_fraction=0.2)
    np.testing.assert_array_equal(ytr, ds.train[:, 0].astype(int) % 3)
    np.testing.assert_array_equal(yte, ds.test[:, 0].astype(int) % 3)
    with pytest.raises(DataError, match="no labels file"):
        load_labels(str(tmp_path / "d.npy"), tmp_path / "missing.npy")
    with pytest.raises(DataError, match="has no labels"):
        load_labels("moons")
    from jflows.data.digits import load_digits_labels_split

    assert load_digits_labels_split()[0].shape == (1500,)


@pytest.mark.slow
def test_cli_trains_a_hybrid_on_a_labelled_npy(tmp_path, capsys):
    from helpers import cli_fails

    from jflows.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    np.save(tmp_path / "d.npy", x)
    np.save(tmp_path / "d_labels.npy", (x[:, 0] > 0).astype(np.int64))
    out = tmp_path / "run"
    args = ["train", "--model", "realnvp", "--data", str(tmp_path / "d.npy"), "--out", str(out),
            "--steps", "60", "--quiet", "--hybrid-lambda", "0.1", "--opt", "n_couplings=2",
            "--opt", "hidden=(8,)", "--lr", "1e-2", "--weight-decay", "0", "--schedule", "constant"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "test accuracy" in line and "hybrid, lambda 0.1" in line, line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.7 and metrics["steps"] == 60
    assert "test_nll" in metrics and metrics["hybrid_lambda"] == 0.1
    config = json.loads((out / "config.json").read_text())
    assert config["hybrid_lambda"] == 0.1 and config["n_classes"] == 2
    cli_fails(capsys, args, "already holds a run")
