"""The surjective models end to end: --dequantization, eval --iw K, maxpool, absolute, augmented.

Every run is tiny (2 steps, a few channels); the figures are checked for their labels (exact or
bound), not their values, except the IWBO, which must not be looser than the one-draw ELBO.
The multi-device check runs in a subprocess with two virtual CPU devices.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import xla_flags_with
from helpers import cli_fails
from helpers import read_json as read

from jflows.bijectors import UniformDequantization, VariationalDequantization
from jflows.cli import main
from jflows.training.runs import build_model, read_config

SCRIPTS = pathlib.Path(__file__).parent / "scripts"
QUICK = ["--batch-size", "8", "--quiet"]
GLOW = ["--opt", "levels=1", "--opt", "steps=1", "--opt", "hidden=4"]
MAXPOOL = ["--opt", "steps=1", "--opt", "hidden=4", "--opt", "pool_hidden=4"]
VECTOR = ["--opt", "n_couplings=2", "--opt", "hidden=(4,)"]


# one worker trains the shared runs (with --dist loadgroup), instead of one copy per worker
pytestmark = pytest.mark.xdist_group("cli_surjections")


def _train(out, model, data, *extra, steps=2):
    return ["train", "--model", model, "--data", data, "--out", str(out), "--steps", str(steps),
            *QUICK, *extra]


RUNS = {
    "glow_var": ("glow", "digits", "--dequantization", "variational", *GLOW),
    "maxpool": ("maxpool", "digits", *MAXPOOL),
    "augmented": ("augmented", "moons", *VECTOR, "--opt", "q_hidden=(4,)"),
    "absolute": ("absolute", "reflected-moons", *VECTOR, "--opt", "sign_hidden=(4,)"),
}
"""The shared runs: name -> (model, data, extra arguments of ``jflows train``)."""


@pytest.fixture(scope="module")
def run(request, tmp_path_factory):
    """The directory of the shared run ``request.param`` (a key of :data:`RUNS`), trained once.

    Tests take it with ``@pytest.mark.parametrize("run", [name], indirect=True)``; pytest
    groups the tests of one run together, so each run trains once for the module.
    """
    model, data, *extra = RUNS[request.param]
    out = tmp_path_factory.mktemp("surj") / request.param
    assert main(_train(out, model, data, *extra)) == 0
    return out


def _uses(name):
    return pytest.mark.parametrize("run", [name], indirect=True)


def _first_layer(run):
    return build_model(read_config(run), training=False).bijector.bijectors[0]


@pytest.mark.slow
@_uses("glow_var")
def test_variational_dequantization_run(run):
    out = run
    assert read(out / "config.json")["dequantization"] == "variational"
    metrics = read(out / "metrics.json")
    assert metrics["likelihood"] == "bound" and np.isfinite(metrics["test_nll_bound"])
    assert "test_nll" not in metrics and 0 < metrics["test_bits_per_dim_bound"] < 10
    last = json.loads((out / "evals.jsonl").read_text().splitlines()[-1])
    assert "test_nll_bound" in last and "test_nll" not in last
    assert isinstance(_first_layer(out), VariationalDequantization)


@pytest.mark.slow
@_uses("maxpool")
def test_maxpool_run_reports_a_bits_per_dim_bound_and_samples_images(run, tmp_path):
    out = run
    metrics = read(out / "metrics.json")
    assert metrics["likelihood"] == "bound" and "test_bits_per_dim" not in metrics
    assert 0 < metrics["test_bits_per_dim_bound"] < 10
    # the default dequantization of an image run is recorded
    assert read(out / "config.json")["dequantization"] == "uniform"
    assert isinstance(_first_layer(out), UniformDequantization)
    assert main(["sample", "--run", str(out), "--n", "5", "--out", str(tmp_path / "m.npy")]) == 0
    x = np.load(tmp_path / "m.npy")
    assert x.shape == (5, 8, 8, 1) and x.dtype == np.uint8 and x.max() < 17


def test_dequantization_of_vectors_is_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    cli_fails(capsys, _train(out, "realnvp", "moons", "--dequantization", "variational", *VECTOR),
              "--dequantization variational", "image")
    assert not out.exists()


def test_iw_must_be_positive(capsys):
    for bad in ("0", "-2", "two"):
        cli_fails(capsys, ["eval", "--run", "nowhere", "--data", "digits", "--iw", bad], "--iw")


@pytest.mark.slow
@_uses("maxpool")
def test_iwbo_eval_is_labelled_and_not_looser_than_the_elbo(run, capsys):
    out = run
    assert main(["eval", "--run", str(out), "--data", "digits"]) == 0
    elbo = read(out / "eval.json")
    assert elbo["iw_samples"] == 1 and elbo["likelihood"] == "bound"
    assert elbo["nll_bound"] == pytest.approx(read(out / "metrics.json")["test_nll_bound"])
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--data", "digits", "--iw", "8"]) == 0
    said = capsys.readouterr().out
    assert "IWBO K=8" in said and "bits/dim" in said
    iwbo = read(out / "eval.json")
    assert iwbo["iw_samples"] == 8 and iwbo["likelihood"] == "bound"
    assert iwbo["n"] == elbo["n"] == 297
    # E[IWBO_K] >= E[ELBO] (Jensen over the K draws). The two evaluations use other draws
    # (other batch sizes, so other per-batch keys), so only the mean over the 297 test rows is
    # compared: dequantization noise moves the one-draw ELBO by a few tenths of a nat per
    # image, and with these fixed keys the IWBO is lower by about 0.4 nats.
    assert iwbo["nll_bound"] < elbo["nll_bound"]
    assert iwbo["bits_per_dim_bound"] < elbo["bits_per_dim_bound"]


@pytest.mark.slow
@_uses("augmented")
def test_augmented_run_is_a_bound_and_its_iwbo_is_tighter(run, capsys):
    out = run
    metrics = read(out / "metrics.json")
    assert metrics["likelihood"] == "bound" and np.isfinite(metrics["test_nll_bound"])
    assert "test_nll" not in metrics and "test_bits_per_dim_bound" not in metrics
    assert main(["eval", "--run", str(out), "--data", "moons"]) == 0
    elbo = read(out / "eval.json")
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--data", "moons", "--iw", "8"]) == 0
    assert "IWBO K=8" in capsys.readouterr().out
    iwbo = read(out / "eval.json")
    assert iwbo["iw_samples"] == 8 and iwbo["likelihood"] == "bound" and iwbo["n"] == 5000
    # after two steps q(a | x) is still nearly N(0, I), where the ELBO hardly depends on the
    # draw of a (at initialisation it does not at all): the gap is small, so the mean over
    # the 5000 rows may sit above the ELBO's by at most a fraction of its standard error
    assert iwbo["nll_bound"] <= elbo["nll_bound"] + 0.1 * elbo["nll_bound_stderr"]


@pytest.mark.slow
@_uses("absolute")
def test_absolute_run_is_exact_and_ignores_iw(run, capsys):
    out = run
    metrics = read(out / "metrics.json")
    assert metrics["likelihood"] == "exact" and np.isfinite(metrics["test_nll"])
    assert not any(key.endswith("_bound") for key in metrics)
    assert read(out / "config.json").get("dequantization") is None
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--data", "reflected-moons", "--iw", "8"]) == 0
    said = capsys.readouterr().out
    assert "--iw 8" in said and "no stochastic layer" in said and "IWBO" not in said
    record = read(out / "eval.json")
    assert record["iw_samples"] == 1 and record["likelihood"] == "exact"
    assert record["nll"] == pytest.approx(metrics["test_nll"], rel=1e-6)


@pytest.mark.slow
@_uses("maxpool")
def test_resume_checks_the_dequantization(run, capsys):
    out = run
    args = _train(out, "maxpool", "digits", *MAXPOOL)
    assert "--dequantization" not in args
    before = (out / "config.json").read_text()
    cli_fails(capsys, [*args, "--dequantization", "variational"], "dequantization")
    assert (out / "config.json").read_text() == before
    # a config from before the setting has no key: it dequantized uniformly, so a command
    # line without the flag resumes it
    config = json.loads(before)
    del config["dequantization"]
    (out / "config.json").write_text(json.dumps(config))
    assert main(_train(out, "maxpool", "digits", *MAXPOOL, steps=3)) == 0
    assert "resuming from step 2" in capsys.readouterr().err
    assert read(out / "metrics.json")["steps"] == 3


@pytest.mark.slow
def test_each_replica_draws_its_own_noise():
    env = {**os.environ, "XLA_FLAGS": xla_flags_with("--xla_force_host_platform_device_count=2")}
    proc = subprocess.run([sys.executable, str(SCRIPTS / "parallel_noise.py")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    for name, r in results.items():
        for path in ("sharded", "pmap"):
            nll = np.asarray(r[path])
            assert np.isfinite(nll).all(), (name, path)
            # the same rows, rows 0-3 on device 0 and 4-7 on device 1: no value repeats
            # across devices (nor within one), so no two replicas drew the same noise
            assert len(np.unique(nll)) == len(nll), (name, path, nll)
            assert r[f"{path}_again"] == r[path], (name, path)  # the same key, the same draws
        assert r["sharded_other_key"] != r["sharded"]
        # the training steps' losses are the means of the same per-row draws
        assert r["train_loss"] == pytest.approx(np.mean(r["sharded"]), rel=1e-5)
        assert r["pmap_train_loss"] == pytest.approx([np.mean(r["pmap"])] * 2, rel=1e-5)
