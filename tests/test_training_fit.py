"""fit(): checkpoints and resumption, run files, image data, labelled figures, pictures."""

import json
import logging
import math
import os
import pathlib

import jax
import numpy as np
import optax
import pytest

from jflows.data import load_dataset, vector_stats
from jflows.errors import CheckpointError
from jflows.models import image_preprocessing, realnvp, vector_preprocessing
from jflows.training import Checkpointer, create_train_state, fit
from jflows.training.pictures import save_run_pictures


@pytest.fixture(scope="module")
def toy():
    ds = load_dataset("moons", n_train=2000, n_test=300)
    pre = vector_preprocessing(*vector_stats(ds.train))
    return ds, realnvp((2,), n_couplings=2, hidden=(16, 16), actnorm=True, preprocessing=pre)


def run(model, ds, out_dir, steps, **kw):
    settings = dict(batch_size=64, learning_rate=3e-3, seed=3, eval_every=15,
                    checkpoint_every=10, eval_batch_size=128, progress=False,
                    val_fraction=0.0)  # the last state (validation: test_training_validation)
    settings.update(kw)
    return fit(model, model, ds, steps=steps, out_dir=out_dir, **settings)


@pytest.mark.slow
def test_resume_gives_the_same_parameters(toy, tmp_path):
    ds, model = toy
    full, history_full = run(model, ds, tmp_path / "full", 40)
    split = tmp_path / "split"
    half, _ = run(model, ds, split, 20)
    assert int(half.step) == 20
    with Checkpointer(split / "checkpoints") as ckpt:  # as if killed just before step 20's save
        ckpt._manager.delete(20)
    resumed, history = run(model, ds, split, 40)
    assert int(resumed.step) == 40
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert [r["step"] for r in history] == [r["step"] for r in history_full] == [15, 30, 40]
    np.testing.assert_allclose(history[-1]["test_nll"], history_full[-1]["test_nll"], rtol=1e-5)

    metrics = json.loads((split / "metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["nonfinite_steps"] == 0
    assert metrics["data"] == "moons" and metrics["model"] == "Flow"
    assert metrics["test_nll"] == history[-1]["test_nll"] and metrics["likelihood"] == "exact"
    assert metrics["wall_time_s"] > history[0]["wall_time_s"] > 0
    lines = (split / "evals.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [15, 30, 40]
    assert sorted(os.listdir(split / "checkpoints")) == ["30", "40"]

    again, history = run(model, ds, split, 40)  # finished: nothing to train, same figures
    assert int(again.step) == 40 and [r["step"] for r in history] == [15, 30, 40]
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        run(model, ds, split, 60, resume=False)


@pytest.mark.slow
def test_fit_on_images_reports_bits_per_dim_as_a_bound(tmp_path, caplog):
    ds = load_dataset("digits")
    model = realnvp(ds.event_shape, n_levels=1, n_checkerboard=1, conv_hidden=8,
                    preprocessing=image_preprocessing(ds.levels))
    with caplog.at_level(logging.INFO, logger="jflows.training.fit"):
        state, history = fit(model, model, ds, steps=8, batch_size=32, learning_rate=1e-3,
                             seed=0, out_dir=tmp_path, eval_every=4, checkpoint_every=4,
                             eval_batch_size=128, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # dequantization makes log_prob a lower bound: every figure says so, none claims exactness
    bpd = metrics["test_bits_per_dim_bound"]
    assert np.isfinite(bpd) and 0 < bpd < 10
    assert math.isclose(bpd, metrics["test_nll_bound"] / (64 * math.log(2)))
    assert metrics["likelihood"] == "bound" and "final_test_nll_bound" in metrics
    assert not {"test_nll", "test_bits_per_dim", "val_nll", "final_test_nll"} & set(metrics)
    assert {"val_nll_bound", "val_nll_bound_stderr", "test_nll_bound_stderr"} <= set(metrics)
    lines = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert all(r["likelihood"] == "bound" and "test_nll" not in r for r in lines)
    assert [r["step"] for r in lines] == [r["step"] for r in history] == [4, 8]
    assert "step 8: test_nll_bound " in caplog.text and "bits/dim" in caplog.text
    assert metrics["levels"] == 17 and metrics["kind"] == "image"
    paths = save_run_pictures(tmp_path, model, state, ds, key=jax.random.key(0))
    assert paths == [str(tmp_path / "samples.png")] and os.path.getsize(paths[0]) > 0


@pytest.mark.slow
def test_2d_pictures(toy, tmp_path):
    ds, model = toy
    state = create_train_state(model, optax.adam(1e-3), ds.train[:500], jax.random.key(0))
    paths = save_run_pictures(tmp_path, model, state, ds, key=jax.random.key(0), n_samples=200,
                              eval_batch_size=10_000)
    assert sorted(os.path.basename(p) for p in paths) == ["density.png", "samples.png"]
    assert all(os.path.getsize(p) > 0 for p in paths)


def test_fit_has_no_branch_on_the_device_count():
    # one device is a one-device mesh: fit and its parts never ask how many devices there are
    # (tests/test_parallel.py shows that one and four devices run the same lines)
    import jflows.training as training

    root = pathlib.Path(training.__file__).parent
    for name in ("fit.py", "fit_steps.py", "loop.py", "run_files.py"):
        source = (root / name).read_text()
        for branch in ("mesh is None", "mesh is not None", "devices >", "device_count",
                       "devices.size >", "sharded_"):
            assert branch not in source, (name, branch)
