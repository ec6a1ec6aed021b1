"""fit(): validation split, best state, early stopping, divergence, strict JSON, optimizer."""

import json
import math

import jax
import numpy as np
import optax
import pytest

from jflows.data import load_dataset, vector_stats
from jflows.errors import ConfigError, TrainingDivergedError
from jflows.models import realnvp, vector_preprocessing
from jflows.training import fit, load_run
from jflows.training.metrics import read_jsonl, strict_record, write_json
from jflows.training.optim import make_optimizer
from jflows.training.setup import train_run
from jflows.training.validation import best_record, divergence, split_validation


def strict_load(path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """60 rows of a correlated 6-d Gaussian: a big flow memorises them within 100 steps."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6))
    path = tmp_path_factory.mktemp("table") / "table.npy"
    np.save(path, x)
    return path


def test_split_validation_is_disjoint_and_seeded():
    fit_rows, val_rows = split_validation(100, 0.1, seed=3)
    assert len(val_rows) == 10 and len(fit_rows) == 90
    assert not set(fit_rows) & set(val_rows)
    again = split_validation(100, 0.1, seed=3)
    np.testing.assert_array_equal(again[1], val_rows)
    assert not np.array_equal(split_validation(100, 0.1, seed=4)[1], val_rows)
    assert len(split_validation(100, 0.0, seed=3)[1]) == 0


@pytest.mark.slow
def test_early_stopping_keeps_and_restores_the_best_step(small_table, tmp_path):
    out = tmp_path / "run"
    run = train_run(
        "realnvp", small_table, out, steps=400, lr=1e-2, eval_every=5, checkpoint_every=50,
        batch_size=32, val_fraction=0.25, patience=3, options={"hidden": (64, 64)},
    )
    metrics = strict_load(out / "metrics.json")
    history = read_jsonl(out / "evals.jsonl")
    best = best_record(history)
    assert metrics["stopped_early"] and metrics["steps"] < 400
    assert metrics["best_step"] == best["step"] < metrics["steps"]
    assert metrics["val_nll"] == best["val_nll"] and metrics["test_nll"] == best["test_nll"]
    assert metrics["final_test_nll"] == history[-1]["test_nll"]
    assert [r["step"] for r in history if r["step"] > best["step"]] == [
        best["step"] + 5 * k for k in (1, 2, 3)
    ]
    # fit returns the best state, and load_run (eval, sample) restores it, not the last one
    assert int(run.state.step) == best["step"]
    loaded = load_run(out)
    assert int(loaded.state.step) == best["step"]
    for a, b in zip(jax.tree_util.tree_leaves(run.state.params),
                    jax.tree_util.tree_leaves(loaded.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    config = strict_load(out / "config.json")
    assert (config["n_train"], config["n_val"], config["n_test"]) == (48, 12, 12)
    assert (metrics["n_train"], metrics["n_val"], metrics["n_fit"]) == (48, 12, 36)
    assert config["split_seed"] == 0 and config["test_fraction"] == 0.2

    # rerunning the finished (early-stopped) run trains nothing and reports the same figures
    again = train_run(
        "realnvp", small_table, out, steps=400, lr=1e-2, eval_every=5, checkpoint_every=50,
        batch_size=32, val_fraction=0.25, patience=3, options={"hidden": (64, 64)},
    )
    assert int(again.state.step) == best["step"]
    assert strict_load(out / "metrics.json")["steps"] == metrics["steps"]


@pytest.mark.slow
def test_validation_resume_equals_uninterrupted(small_table, tmp_path):
    settings = dict(steps=60, lr=1e-2, eval_every=10, checkpoint_every=20, batch_size=32,
                    schedule="constant",
                    val_fraction=0.25, patience=0, options={"hidden": (32,)})
    full = train_run("realnvp", small_table, tmp_path / "full", **settings)
    train_run("realnvp", small_table, tmp_path / "split", **{**settings, "steps": 40})
    resumed = train_run("realnvp", small_table, tmp_path / "split", **settings)
    assert int(full.state.step) == int(resumed.state.step)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(full.state), leaves(resumed.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert strict_load(tmp_path / "full" / "metrics.json")["best_step"] == strict_load(
        tmp_path / "split" / "metrics.json")["best_step"]


@pytest.mark.slow
def test_nonfinite_run_raises_after_writing_strict_json(tmp_path):
    ds = load_dataset("moons", n_train=500, n_test=100)
    flow = realnvp((2,), n_couplings=2, hidden=(8,),
                   preprocessing=vector_preprocessing(*vector_stats(ds.train)))
    poisoned = optax.chain(optax.adam(1e-3), optax.scale(float("nan")))  # NaN parameters
    with pytest.raises(TrainingDivergedError, match="not finite|skipped") as info:
        fit(flow, flow, ds, steps=20, batch_size=32, out_dir=tmp_path, eval_every=10,
            checkpoint_every=10, optimizer=poisoned, progress=False, val_fraction=0.2)
    assert "--lr" in str(info.value)
    metrics = strict_load(tmp_path / "metrics.json")
    assert metrics["diverged"] is True and metrics["finite"] is False
    assert metrics["test_nll"] is None and "test_nll" in metrics["nonfinite_keys"]
    assert metrics["steps"] == 10 and metrics["nonfinite_steps"] == 9
    for line in (tmp_path / "evals.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name} in evals.jsonl"))


def test_divergence_rule():
    assert divergence({"step": 100, "test_nll": 1.0, "nonfinite_steps": 50}, None) is None
    assert "51 of the 100" in divergence(
        {"step": 100, "test_nll": 1.0, "nonfinite_steps": 51}, None)
    previous = {"step": 100, "nonfinite_steps": 51}
    assert divergence({"step": 200, "test_nll": 1.0, "nonfinite_steps": 60}, previous) is None
    assert "not finite" in divergence({"step": 3, "test_nll": None, "nonfinite_steps": 0}, None)
    assert "not finite" in divergence({"step": 3, "test_nll": 1.0, "val_nll": math.inf}, None)


def test_json_files_are_strict(tmp_path):
    write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1.0, float("inf")], "z": 2})
    record = strict_load(tmp_path / "a.json")
    assert record == {"x": None, "y": [1.0, None], "z": 2, "finite": False,
                      "nonfinite_keys": ["x", "y[1]"]}
    assert strict_record({"a": 1.0}) == {"a": 1.0}


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -1e-3])
def test_learning_rate_must_be_finite_and_positive(lr):
    with pytest.raises(ConfigError, match="finite positive"):
        make_optimizer(lr)


def test_weight_decay_is_adamw():
    params = {"w": np.ones(3, np.float32)}
    zero = {"w": np.zeros(3, np.float32)}
    opt = make_optimizer(0.1, weight_decay=0.5)
    updates, _ = opt.update(zero, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones(3), rtol=1e-6)
    updates, _ = make_optimizer(0.1).update(zero, make_optimizer(0.1).init(params), params)
    np.testing.assert_allclose(updates["w"], 0.0)
    with pytest.raises(ConfigError, match="weight_decay"):
        make_optimizer(0.1, weight_decay=-1.0)
    with pytest.raises(ConfigError, match="grad_clip"):
        make_optimizer(0.1, grad_clip=float("inf"))
