"""CLI settings: optimizer flags, validation split, eval-time --opt, runs made from Python."""

import json

import numpy as np
import pytest
from helpers import read_json as read

from jflows.cli import main
from jflows.training.setup import train_run

TINY = ["--opt", "n_couplings=2", "--opt", "hidden=(8,)", "--batch-size", "32", "--quiet"]


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-1e-3"])
def test_bad_learning_rate_is_refused_before_writing(tmp_path, capsys, lr):
    out = tmp_path / "run"
    code = main(["train", "--model", "realnvp", "--data", "moons", "--out", str(out),
                 f"--lr={lr}", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "learning rate" in err and "Traceback" not in err
    assert not out.exists()


def test_diverged_training_exits_3_with_strict_files(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "realnvp", "--data", "moons", "--out", str(out),
                 "--steps", "20", "--eval-every", "10", "--lr", "1e30", "--schedule", "constant",
                 *TINY])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "diverged" in err and "Traceback" not in err
    metrics = json.loads((out / "metrics.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.json"))
    assert metrics["diverged"] is True and metrics["nonfinite_steps"] >= 5


@pytest.mark.slow
def test_optimizer_and_validation_flags_are_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "realnvp", "--data", "moons", "--out", str(out), "--steps", "20",
            "--eval-every", "10", "--grad-clip", "5", "--schedule", "constant",
            "--warmup-steps", "5", "--weight-decay", "0.01", "--val-fraction", "0.2",
            "--patience", "4", *TINY]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert "validation NLL" in line and "0 of 20 steps skipped" in line
    config, metrics = read(out / "config.json"), read(out / "metrics.json")
    assert (config["grad_clip"], config["schedule"], config["warmup_steps"]) == (5.0, "constant", 5)
    assert (config["weight_decay"], config["val_fraction"], config["patience"]) == (0.01, 0.2, 4)
    assert config["n_val"] == 20_000 and config["n_train"] == 100_000
    assert metrics["val_nll"] is not None and metrics["best_step"] in (10, 20)
    # a resumed run may not change the optimizer: its trajectory would no longer be the run's
    assert main([*args[:-len(TINY)], "--weight-decay", "0.1", *TINY]) == 2
    assert "weight_decay" in capsys.readouterr().err


@pytest.mark.slow
def test_npy_run_records_its_split_and_eval_says_what_it_scores(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(300, 3))
    data = tmp_path / "table.npy"
    np.save(data, x)
    out = tmp_path / "run"
    assert main(["train", "--model", "realnvp", "--data", str(data), "--out", str(out),
                 "--steps", "10", "--eval-every", "5", *TINY]) == 0
    config = read(out / "config.json")
    # below 10 000 rows: a 0.2 test split, then 0.1 of the training rows for validation
    assert (config["n_train"], config["n_test"], config["n_val"]) == (240, 60, 24)
    assert config["test_fraction"] == 0.2 and config["split_seed"] == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--data", str(data)]) == 0
    said = capsys.readouterr().out
    assert "300 rows" in said and "the run's own data file: every row" in said
    assert read(out / "eval.json")["n"] == 300


@pytest.fixture(scope="module")
def resflow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rf") / "run"
    args = ["train", "--model", "resflow", "--data", "moons", "--out", str(out), "--steps", "4",
            "--batch-size", "32", "--quiet", "--opt", "n_blocks=1", "--opt", "hidden=(8,)"]
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_eval_and_sample_take_solver_options(resflow_run, tmp_path, capsys):
    out = resflow_run
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--data", "moons",
                 "--opt", "inverse_max_iter=2000", "--opt", "inverse_rtol=1e-6"]) == 0
    assert main(["sample", "--run", str(out), "--n", "8", "--out", str(tmp_path / "s.npy"),
                 "--opt", "inverse_max_iter=2000", "--opt", "inverse_atol=1e-6"]) == 0
    assert np.load(tmp_path / "s.npy").shape == (8, 2)
    assert read(out / "config.json")["options"] == {"n_blocks": 1, "hidden": [8]}  # untouched
    capsys.readouterr()
    for command in (["eval", "--run", str(out), "--data", "moons"],
                    ["sample", "--run", str(out), "--n", "8", "--out", str(tmp_path / "t.npy")]):
        assert main([*command, "--opt", "hidden=(16,)"]) == 2
        err = capsys.readouterr().err
        assert "hidden" in err and "architecture" in err and "inverse_max_iter" in err
    assert not (tmp_path / "t.npy").exists()


@pytest.mark.slow
def test_a_run_made_from_python_is_usable_from_the_cli(tmp_path, capsys):
    out = tmp_path / "py"
    run = train_run("realnvp", "moons", out, steps=10, eval_every=5, checkpoint_every=5,
                    batch_size=32, options={"n_couplings": 2, "hidden": (8,)})
    assert int(run.state.step) == 10 and (out / "config.json").is_file()
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--data", "moons"]) == 0
    assert read(out / "eval.json")["nll"] == pytest.approx(run.history[-1]["test_nll"], rel=1e-6)
    assert main(["sample", "--run", str(out), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    args = ["train", "--model", "realnvp", "--data", "moons", "--out", str(out), "--steps", "15",
            "--quiet"]
    assert main(args) == 0
    assert "resuming from step 10" in capsys.readouterr().err
    assert read(out / "metrics.json")["steps"] == 15


@pytest.mark.slow
def test_resumed_train_may_change_only_solver_options(resflow_run, capsys):
    base = ["train", "--model", "resflow", "--data", "moons", "--out", str(resflow_run),
            "--steps", "4", "--batch-size", "32", "--quiet", "--opt", "n_blocks=1",
            "--opt", "hidden=(8,)"]
    assert main([*base, "--opt", "inverse_max_iter=3000"]) == 0
    assert read(resflow_run / "config.json")["options"]["inverse_max_iter"] == 3000
    capsys.readouterr()
    assert main([*base, "--opt", "coeff=0.5"]) == 2
    assert "options" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_from_before_the_split_settings_resumes_with_its_own_split(tmp_path, capsys):
    x = np.random.default_rng(1).normal(size=(200, 3))
    data = tmp_path / "table.npy"
    np.save(data, x)
    out = tmp_path / "run"
    base = ["train", "--model", "realnvp", "--data", str(data), "--out", str(out),
            "--eval-every", "5", *TINY]
    assert main([*base, "--steps", "10", "--weight-decay", "0"]) == 0  # Adam, as jflows was
    config = read(out / "config.json")
    for key in ("test_fraction", "val_fraction", "patience", "weight_decay", "warmup_steps",
                "n_val", "split_seed"):  # as written by jflows before these settings
        config.pop(key)
    (out / "config.json").write_text(json.dumps(config))
    assert main([*base, "--steps", "15"]) == 0
    config = read(out / "config.json")
    assert (config["test_fraction"], config["val_fraction"], config["n_test"]) == (0.1, 0.0, 20)
    assert config["weight_decay"] == 0.0 and read(out / "metrics.json")["steps"] == 15
