"""Hybrid run directories: config.json, the saved state, and ``jflows eval``/``sample`` on them."""

import json

import jax
import numpy as np
import pytest

import jflows
from jflows.training.run_config import RunConfig

TINY = {"n_couplings": 2, "hidden": (8,)}


def _labelled_npy(tmp_path, n=200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    np.save(tmp_path / "d.npy", x)
    np.save(tmp_path / "d_labels.npy", (x[:, 0] > 0).astype(np.int64))
    return str(tmp_path / "d.npy")


def test_run_config_takes_the_hybrid_fields_and_build_model_wraps_the_flow():
    from jflows.training.runs import build_model

    base = {"model": "realnvp", "options": TINY, "data": "/x/d.npy", "data_name": "d.npy",
            "kind": "vector", "event_shape": [2], "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    config = RunConfig.from_dict({**base, "hybrid_lambda": 0.5, "n_classes": 3,
                                  "labels": "/x/y.npy"})
    assert (config.hybrid_lambda, config.n_classes, config.labels) == (0.5, 3, "/x/y.npy")
    model = build_model(config, training=False)
    assert isinstance(model, jflows.models.Hybrid) and model.n_classes == 3
    plain = RunConfig.from_dict(base)
    assert plain.hybrid_lambda is None and type(build_model(plain)).__name__ == "Flow"
    with pytest.raises(jflows.errors.ConfigError, match="n_classes"):
        RunConfig.from_dict({**base, "n_classes": "three"})


def test_the_flows_methods_work_on_a_hybrid_and_flow_part_unwraps_it():
    from jflows.models.hybrid import flow_part

    model = jflows.models.hybrid(jflows.models.realnvp((2,), **TINY), 2)
    x = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    v = model.init(jax.random.key(0), x, method="log_prob")
    flow, flow_v = flow_part(model, v)
    log_prob = flow.apply(flow_v, x, method="log_prob")
    np.testing.assert_allclose(model.apply(v, x, 3, method="iwbo"), log_prob, rtol=1e-6)
    z = model.apply(v, x, method="forward")
    np.testing.assert_allclose(model.apply(v, z, method="inverse"), x, atol=1e-5)
    assert model.apply(v, 4, rngs={"sample": jax.random.key(1)}, method="sample").shape == (4, 2)


def test_a_hybrid_run_saves_its_state_and_loads_with_load_run(tmp_path):
    from jflows.training import load_run
    from jflows.training.hybrid_run import evaluate_hybrid_run, train_hybrid_run

    data = _labelled_npy(tmp_path)
    out = tmp_path / "run"
    settings = {"model": "realnvp", "data": data, "steps": 30, "options": TINY, "lr": 1e-2,
                "schedule": "constant", "weight_decay": 0.0}
    m = train_hybrid_run(settings, out, lam=0.1)
    assert (out / "checkpoints").is_dir()
    run = load_run(out)
    assert isinstance(run.eval_model, jflows.models.Hybrid) and int(run.state.step) == 30
    config = json.loads((out / "config.json").read_text())
    assert config["hybrid_lambda"] == 0.1 and config["n_classes"] == 2
    assert config["labels"] is None
    assert config["val_fraction"] == 0.0 and config["patience"] == 0  # trained on all of train
    assert (config["n_train"], config["n_val"], config["n_test"]) == (160, 0, 40)  # as fit
    # the restored state scores the test split exactly as training reported
    from jflows.data import load_dataset
    from jflows.data.labels import load_labels

    test_x = load_dataset(data, seed=run.config.seed, test_fraction=run.config.test_fraction).test
    test_y = load_labels(data, seed=run.config.seed, test_fraction=run.config.test_fraction)[1]
    ev = evaluate_hybrid_run(run, test_x, test_y)
    assert ev["accuracy"] == pytest.approx(m["test_accuracy"])
    assert ev["nll"] == pytest.approx(m["test_nll"], rel=1e-5)
    from jflows.training.pictures import draw_samples

    samples = draw_samples(run.eval_model, run.state, 7, jax.random.key(0))
    assert samples.shape == (7, 2) and np.isfinite(samples).all()


def test_a_hybrid_run_refuses_a_validation_split(tmp_path):
    from jflows.training.hybrid_run import train_hybrid_run

    settings = {"model": "realnvp", "data": _labelled_npy(tmp_path), "val_fraction": 0.2}
    with pytest.raises(jflows.errors.ConfigError, match="val-fraction"):
        train_hybrid_run(settings, tmp_path / "run", lam=0.1)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_eval_and_sample_a_hybrid_run(tmp_path, capsys):
    from helpers import cli_fails

    from jflows.cli import main

    data = _labelled_npy(tmp_path)
    out = str(tmp_path / "run")
    train = ["train", "--model", "realnvp", "--data", data, "--out", out, "--steps", "40",
             "--quiet", "--hybrid-lambda", "0.1", "--opt", "n_couplings=2", "--opt",
             "hidden=(8,)", "--lr", "1e-2", "--weight-decay", "0", "--schedule", "constant"]
    assert main(train) == 0
    capsys.readouterr()
    assert main(["eval", "--run", out, "--data", data]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "accuracy" in line and "nats" in line, line
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert 0.5 < record["accuracy"] <= 1.0 and record["n"] == 200 and "nll" in record
    # data without labels: the NLL alone, and a note saying why there is no accuracy
    np.save(tmp_path / "other.npy", np.zeros((5, 2), np.float32))
    assert main(["eval", "--run", out, "--data", str(tmp_path / "other.npy")]) == 0
    text = capsys.readouterr().out
    assert "no labels" in text and "accuracy" not in json.loads(
        (tmp_path / "run" / "eval.json").read_text())
    assert main(["sample", "--run", out, "--n", "6", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (6, 2)
    cli_fails(capsys, ["plot", "--run", out], "hybrid run", "no training curves")
    # an ordinary train into a hybrid run: one line, nothing resumed
    cli_fails(capsys, train[:7] + ["--steps", "50", "--quiet"] + train[12:16], "hybrid")
