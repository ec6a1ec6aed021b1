"""End-to-end CLI runs: train, resume, eval (same NLL as training's test NLL), sample."""

import json
import os

import numpy as np
import pytest
from helpers import read_json as read

from jflows.cli import main
from jflows.data import load_dataset

VECTOR = ["--opt", "n_couplings=2", "--opt", "hidden=(16,)", "--batch-size", "64"]
IMAGE = ["--opt", "n_levels=1", "--opt", "n_checkerboard=1", "--opt", "conv_hidden=8",
         "--batch-size", "16"]


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moons"
    args = ["train", "--model", "realnvp", "--data", "moons", "--out", str(out), "--steps", "30",
            "--eval-every", "15", "--checkpoint-every", "15", "--seed", "4", "--quiet", *VECTOR]
    assert main(args) == 0
    return out, args


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    args = ["train", "--model", "realnvp", "--data", "digits", "--out", str(out), "--steps", "6",
            "--quiet", *IMAGE]
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_vector_run_files(vector_run):
    out, _ = vector_run
    assert {"config.json", "metrics.json", "evals.jsonl", "checkpoints", "density.png",
            "samples.png"} <= set(os.listdir(out))
    metrics, config = read(out / "metrics.json"), read(out / "config.json")
    assert metrics["steps"] == 30 and metrics["model"] == "realnvp" and metrics["data"] == "moons"
    assert np.isfinite(metrics["test_nll"]) and metrics["wall_time_s"] > 0
    assert "test_bits_per_dim" not in metrics
    assert config["options"] == {"n_couplings": 2, "hidden": [16]}
    assert len(config["mean"]) == len(config["std"]) == 2 and config["seed"] == 4


@pytest.mark.slow
def test_eval_reproduces_the_test_nll(vector_run, tmp_path, capsys):
    out, _ = vector_run
    test_nll = read(out / "metrics.json")["test_nll"]
    assert main(["eval", "--run", str(out), "--data", "moons"]) == 0
    assert f"{test_nll:.4f}" in capsys.readouterr().out
    record = read(out / "eval.json")
    assert record["nll"] == pytest.approx(test_nll, rel=1e-6) and record["n"] == 5000
    test = load_dataset("moons", seed=4).test
    np.save(tmp_path / "test.npy", test.astype(np.float64))  # float64 input is fine
    assert main(["eval", "--run", str(out), "--data", str(tmp_path / "test.npy")]) == 0
    assert read(out / "eval.json")["nll"] == pytest.approx(test_nll, rel=1e-6)
    np.save(tmp_path / "far.npy", test[:100] + 50.0)
    assert main(["eval", "--run", str(out), "--data", str(tmp_path / "far.npy")]) == 0
    assert read(out / "eval.json")["nll"] > test_nll + 10


def test_sample_npy_and_png(vector_run, tmp_path):
    out, _ = vector_run
    assert main(["sample", "--run", str(out), "--n", "1500", "--out", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (1500, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    assert len(np.unique(x[:, 0])) == 1500
    assert main(["sample", "--run", str(out), "--n", "100", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


@pytest.mark.slow
def test_rerun_continues_to_more_steps(vector_run, capsys):
    out, args = vector_run
    more = [a if a != "30" else "40" for a in args]
    assert main(more) == 0
    assert "resuming from step 30" in capsys.readouterr().err
    assert read(out / "metrics.json")["steps"] == 40
    steps = [json.loads(line)["step"] for line in (out / "evals.jsonl").read_text().splitlines()]
    assert steps == [15, 30, 40]


@pytest.mark.slow
def test_image_run_bits_per_dim_and_samples(image_run, tmp_path):
    out = image_run
    metrics = read(out / "metrics.json")
    # dequantized images: the figures are a bound on the discrete data's NLL, and say so
    assert "test_bits_per_dim" not in metrics and metrics["likelihood"] == "bound"
    bpd = metrics["test_bits_per_dim_bound"]
    assert 0 < bpd < 10 and metrics["levels"] == 17
    assert main(["eval", "--run", str(out), "--data", "digits"]) == 0
    record = read(out / "eval.json")
    assert record["bits_per_dim_bound"] == pytest.approx(bpd, rel=1e-6)
    assert record["likelihood"] == "bound"
    np.save(tmp_path / "digits_test.npy", load_dataset("digits").test)
    assert main(["eval", "--run", str(out), "--data", str(tmp_path / "digits_test.npy")]) == 0
    assert read(out / "eval.json")["nll_bound"] == pytest.approx(metrics["test_nll_bound"],
                                                                  rel=1e-6)
    assert main(["sample", "--run", str(out), "--n", "9", "--out", str(tmp_path / "d.npy")]) == 0
    x = np.load(tmp_path / "d.npy")
    assert x.shape == (9, 8, 8, 1) and x.dtype == np.uint8 and x.max() < 17
    assert (out / "samples.png").stat().st_size > 0


@pytest.mark.slow
def test_glow_run_with_reduced_bits_and_temperature(tmp_path):
    out = tmp_path / "glow"
    args = ["train", "--model", "glow", "--data", "digits", "--out", str(out), "--steps", "4",
            "--n-bits", "3", "--batch-size", "16", "--quiet",
            "--opt", "steps=1", "--opt", "hidden=8"]
    assert main(args) == 0
    config, metrics = read(out / "config.json"), read(out / "metrics.json")
    assert config["levels"] == 8 and config["data_levels"] == 17 and config["n_bits"] == 3
    assert config["temperature"] == 0.7  # Glow's pictures are drawn at 0.7
    assert metrics["levels"] == 8
    # bits/dim counts the reduced levels: the same NLL in nats over log(8) per dim, not log(17)
    assert metrics["test_bits_per_dim_bound"] == pytest.approx(
        metrics["test_nll_bound"] / (64 * np.log(2)), rel=1e-6)
    assert main(["eval", "--run", str(out), "--data", "digits"]) == 0  # raw 17-level data
    assert read(out / "eval.json")["nll_bound"] == pytest.approx(metrics["test_nll_bound"],
                                                                  rel=1e-6)
    cold, hot = tmp_path / "cold.npy", tmp_path / "hot.npy"
    for path, temperature in ((cold, "0.0"), (hot, "1.0")):
        assert main(["sample", "--run", str(out), "--n", "16", "--out", str(path),
                     "--temperature", temperature]) == 0
    cold_x, hot_x = np.load(cold), np.load(hot)
    assert cold_x.max() < 8
    assert np.all(cold_x == cold_x[0])  # temperature 0: every sample is the prior mean
    assert not np.all(hot_x == hot_x[0])


def test_n_bits_rejects_vectors_and_too_many_bits(tmp_path, capsys):
    base = ["train", "--model", "glow", "--out", str(tmp_path / "x"), "--quiet"]
    assert main([*base, "--data", "moons", "--n-bits", "3"]) == 2
    assert main([*base, "--data", "digits", "--n-bits", "5"]) == 2
    err = capsys.readouterr().err
    assert "n_bits" in err or "--n-bits" in err
    assert not (tmp_path / "x").exists()
