"""Conditional flows from the command line: --context for train, eval and sample.

Validation errors run in-process before any training (fast); the end-to-end runs train a small
conditional and an unconditional RealNVP on the same rows of the built-in ``conditional-ring``
(marked slow).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import cli_one_line as one_line

from jflows.cli import main
from jflows.data import conditional_ring_mean, sample_conditional_toy

SMALL = ["--opt", "n_couplings=4", "--opt", "hidden=(32, 32)", "--batch-size", "128",
         "--weight-decay", "0", "--val-fraction", "0", "--lr", "3e-3"]
"""A small RealNVP; the small-data defaults (weight decay 10, early stopping) are for tables."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("conditional")
    x, c = sample_conditional_toy("conditional-ring", 4000, seed=0)
    np.save(d / "x.npy", x)
    np.save(d / "c.npy", c)
    np.save(d / "c_short.npy", c[:-1])
    np.save(d / "c_nan.npy", np.where(np.arange(4000)[:, None] == 5, np.nan, c))
    np.save(d / "c_int.npy", (c > 0).astype(np.int64))
    np.save(d / "c2.npy", np.concatenate([c, c], axis=1))
    return d


def _train(out, data, *extra, model="realnvp"):
    return ["train", "--model", model, "--data", str(data), "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("c_short.npy", ["has 3999 rows but data", "x.npy' has 4000", "one context row per"]),
        ("c_nan.npy", ["non-finite values in 1 rows (first row 5)", "drop those rows"]),
        ("c_int.npy", ["holds int64 values", "must be floats", "astype(np.float32)"]),
        ("missing.npy", ["missing.npy' does not exist"]),
    ],
)
def test_bad_context_is_one_line_and_writes_nothing(capsys, tmp_path, files, name, needles):
    out = tmp_path / "run"
    one_line(capsys, _train(out, files / "x.npy", "--context", str(files / name)), name,
             *needles)
    assert not out.exists()


def test_context_needs_a_conditional_model_and_npy_data(capsys, tmp_path, files):
    out, c = tmp_path / "run", str(files / "c.npy")
    one_line(capsys, _train(out, files / "x.npy", "--context", c, model="glow"),
             "model 'glow' cannot condition on a context", "realnvp", "drop --context")
    one_line(capsys, _train(out, "moons", "--context", c), "needs --data to be a .npy file")
    one_line(capsys, _train(out, "conditional-ring", "--context", c), "brings its own context")
    one_line(capsys, _train(out, files / "x.npy", "--context", c, "--hybrid-lambda", "1"),
             "drop --context")
    assert not out.exists()


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory):
    """A conditional and an unconditional RealNVP on the same 4000 rows (same settings)."""
    root = tmp_path_factory.mktemp("runs")
    steps = ["--steps", "800", "--eval-every", "400", *SMALL]
    x = files / "x.npy"
    assert main(_train(root / "cond", x, "--context", str(files / "c.npy"), *steps)) == 0
    assert main(_train(root / "uncond", x, *steps)) == 0
    return root


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_conditional_run_beats_the_unconditional_one(runs, files):
    cond, uncond = _metrics(runs / "cond"), _metrics(runs / "uncond")
    # the ring's marginal NLL is about 1.6 nats, the conditional entropy -0.38
    assert cond["test_nll"] < uncond["test_nll"] - 0.5, (cond["test_nll"], uncond["test_nll"])
    config = json.loads((runs / "cond" / "config.json").read_text())
    assert config["context"] == str(files / "c.npy")
    assert config["context_shape"] == [1]
    c = np.load(files / "c.npy")
    assert abs(config["context_mean"][0] - c.mean()) < 0.05
    assert abs(config["context_std"][0] - c.std()) < 0.05
    assert json.loads((runs / "uncond" / "config.json").read_text())["context_shape"] is None
    assert (runs / "cond" / "samples.png").exists() and (runs / "cond" / "density.png").exists()
    assert (runs / "uncond" / "density.png").exists()


@pytest.mark.slow
def test_sample_draws_from_the_right_conditional(runs, tmp_path):
    n = 2000
    for value in (-0.9, 0.0, 0.9):
        np.save(tmp_path / "c.npy", np.array([[value]], np.float32))
        out = tmp_path / f"s{value}.npy"
        args = ["sample", "--run", str(runs / "cond"), "--context", str(tmp_path / "c.npy"),
                "--n", str(n), "--out", str(out)]
        assert main(args) == 0
        x = np.load(out)
        assert x.shape == (n, 2)
        exact = conditional_ring_mean(np.array([value]))[0]
        # sampling error of the mean (std 0.4 along the ring) plus a small model error
        # (measured: within 0.04 of the exact mean and 0.02 rad of its angle)
        tol = 4 * 0.4 / math.sqrt(n) + 0.1
        np.testing.assert_allclose(x.mean(0), exact, atol=tol)
        angle = math.atan2(x.mean(0)[1], x.mean(0)[0])
        assert abs(angle - math.pi * value) < 0.06, (value, angle)


@pytest.mark.slow
def test_sample_takes_one_context_row_per_sample(capsys, runs, tmp_path):
    contexts = np.array([[-0.5], [0.0], [0.5]], np.float32)
    np.save(tmp_path / "c3.npy", contexts)
    out = tmp_path / "s.npy"
    base = ["sample", "--run", str(runs / "cond"), "--out", str(out)]
    assert main([*base, "--context", str(tmp_path / "c3.npy")]) == 0
    assert np.load(out).shape == (3, 2)
    assert "wrote 3 samples given the contexts" in capsys.readouterr().out
    one_line(capsys, [*base, "--context", str(tmp_path / "c3.npy"), "--n", "5"],
             "--n 5 disagrees", "holds 3 rows")
    one_line(capsys, [*base, "--n", "5"], "is conditional", "pass --context")
    np.save(tmp_path / "c2.npy", np.zeros((1, 2), np.float32))
    one_line(capsys, [*base, "--context", str(tmp_path / "c2.npy"), "--n", "5"],
             "rows of shape (2,)", "contexts of shape (1,)")
    uncond = ["sample", "--run", str(runs / "uncond"), "--out", str(out)]
    one_line(capsys, [*uncond, "--n", "4", "--context", str(tmp_path / "c3.npy")],
             "is unconditional", "drop --context")
    assert main([*uncond, "--n", "4"]) == 0 and np.load(out).shape == (4, 2)
    one_line(capsys, uncond, "--n is required")


@pytest.mark.slow
def test_eval_takes_the_context(capsys, runs, files):
    x, c = str(files / "x.npy"), str(files / "c.npy")
    assert main(["eval", "--run", str(runs / "cond"), "--data", x, "--context", c]) == 0
    cond = json.loads((runs / "cond" / "eval.json").read_text())["nll"]
    assert main(["eval", "--run", str(runs / "uncond"), "--data", x]) == 0
    uncond = json.loads((runs / "uncond" / "eval.json").read_text())["nll"]
    assert cond < uncond - 0.5
    assert main(["eval", "--run", str(runs / "cond"), "--data", x]) == 0  # its own contexts
    assert json.loads((runs / "cond" / "eval.json").read_text())["nll"] == cond
    other = files / "x_copy.npy"
    np.save(other, np.load(x))
    capsys.readouterr()
    one_line(capsys, ["eval", "--run", str(runs / "cond"), "--data", str(other)],
             "pass --context")
    one_line(capsys, ["eval", "--run", str(runs / "uncond"), "--data", x, "--context", c],
             "is unconditional")
    one_line(capsys, ["eval", "--run", str(runs / "cond"), "--data", x, "--context",
                      str(files / "c2.npy")], "rows of shape (2,)")
    one_line(capsys, ["eval", "--run", str(runs / "cond"), "--data", x, "--context",
                      str(files / "c_short.npy")], "has 3999 rows")


@pytest.mark.slow
def test_resume_keeps_the_runs_context(capsys, runs, files, tmp_path):
    other = tmp_path / "other.npy"
    np.save(other, np.load(files / "c.npy"))
    args = _train(runs / "cond", files / "x.npy", "--context", str(other), *SMALL)
    one_line(capsys, args, "holds a run with context=", "c.npy", "other.npy")


@pytest.mark.slow
def test_conditional_nsf_beats_the_unconditional_nsf(files, tmp_path):
    """Issue 16's check: a conditional NSF from the CLI beats the unconditional NSF."""
    small = ["--steps", "300", "--eval-every", "300", "--opt", "n_couplings=2", "--opt",
             "hidden=(32, 32)", *SMALL[4:]]
    x = files / "x.npy"
    cond = _train(tmp_path / "cond", x, "--context", str(files / "c.npy"), *small, model="nsf")
    assert main(cond) == 0
    assert main(_train(tmp_path / "uncond", x, *small, model="nsf")) == 0
    a, b = _metrics(tmp_path / "cond")["test_nll"], _metrics(tmp_path / "uncond")["test_nll"]
    assert a < b - 0.5, (a, b)  # measured: -0.05 vs 1.81 nats
