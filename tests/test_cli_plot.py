"""Training curves (curves.png, `jflows plot`), 1-D runs, and log lines beside the progress bar."""

import json
import logging
import os

import numpy as np
import pytest
from helpers import cli_one_line as one_line_error
from tqdm import tqdm

from jflows.cli import main
from jflows.training.curves import save_training_curves


def fake_run(directory, steps=(10, 20, 30), image=False, nonfinite=False):
    directory.mkdir(parents=True)
    key = "test_bits_per_dim" if image else "test_nll"
    with open(directory / "evals.jsonl", "w") as f:
        for i, step in enumerate(steps):
            record = {"step": step, key: 2.0 - 0.1 * i, "test_nll": 3.0 - 0.1 * i,
                      "train_loss": 2.5 - 0.2 * i, "nonfinite_steps": 0, "wall_time_s": i,
                      "val_nll": 2.1 - 0.05 * i}
            if nonfinite and i == len(steps) - 1:
                record.update({key: None, "train_loss": None, "finite": False})
            f.write(json.dumps(record) + "\n")
    (directory / "metrics.json").write_text(json.dumps({"best_step": steps[-2]}))
    return directory


def test_plot_one_run_and_several(tmp_path, capsys):
    a = fake_run(tmp_path / "a")
    b = fake_run(tmp_path / "b", steps=(5, 15, 25, 35), nonfinite=True)
    assert main(["plot", "--run", str(a)]) == 0
    assert (a / "curves.png").stat().st_size > 0
    both = tmp_path / "both.png"
    assert main(["plot", "--run", str(a), "--run", str(b), "--out", str(both)]) == 0
    assert both.stat().st_size > 0
    assert str(both) in capsys.readouterr().out


def test_curves_from_records_and_images(tmp_path):
    run = fake_run(tmp_path / "img", image=True, nonfinite=True)
    with open(run / "evals.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert save_training_curves(records, tmp_path / "r.png") == str(tmp_path / "r.png")
    save_training_curves([run, records], tmp_path / "two.png", labels=["dir", "records"])
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "two.png").stat().st_size > 0


def test_plot_bad_input(tmp_path, capsys):
    a = fake_run(tmp_path / "a")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, ["plot", "--run", str(tmp_path / "nope")], "nope", "does not exist")
    one_line_error(capsys, ["plot", "--run", str(empty)], "empty", "evals.jsonl")
    one_line_error(capsys, ["plot", "--run", str(a), "--run", str(a)], "--out")
    one_line_error(capsys, ["plot", "--run", str(a), "--out", str(tmp_path / "c.txt")], "c.txt")
    one_line_error(capsys, ["plot", "--run", str(a), "--out", str(tmp_path / "x" / "c.png")],
                   "does not exist")
    assert sorted(os.listdir(a)) == ["evals.jsonl", "metrics.json"]


def test_train_draws_curves(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "realnvp", "--data", "moons", "--out", str(out), "--steps", "4",
            "--eval-every", "2", "--batch-size", "32", "--quiet", "--opt", "n_couplings=2",
            "--opt", "hidden=(8,)"]
    assert main(args) == 0
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "density.png").stat().st_size > 0


def test_log_lines_do_not_break_the_progress_bar(capsys):
    main(["--version"])  # installs jflows' stderr handler
    capsys.readouterr()
    bar = tqdm(total=10, file=None, mininterval=0)  # writes to sys.stderr
    bar.update(3)
    logging.getLogger("jflows.training.fit").info("step 3: test_nll 1.2345")
    bar.update(3)
    bar.close()
    err = capsys.readouterr().err
    lines = [part for line in err.split("\n") for part in line.split("\r")]
    message = [line for line in lines if "test_nll 1.2345" in line]
    assert message and all(line.startswith("jflows: step 3") for line in message), err


@pytest.mark.slow
def test_one_dimensional_resflow_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.5, (300, 1)), rng.normal(1, 1, (300, 1))])
    data = tmp_path / "d1.npy"
    np.save(data, x.astype(np.float32))
    out = tmp_path / "run"
    args = ["train", "--model", "resflow", "--data", str(data), "--out", str(out), "--steps", "6",
            "--eval-every", "3", "--batch-size", "32", "--quiet", "--opt", "n_blocks=1",
            "--opt", "hidden=(8,)"]
    assert main(args) == 0, capsys.readouterr().err
    for name in ("samples.png", "density.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    png = tmp_path / "s.png"
    assert main(["sample", "--run", str(out), "--n", "50", "--out", str(png)]) == 0
    assert png.stat().st_size > 0


@pytest.mark.slow
def test_resflow_with_huge_lr_ends_without_traceback(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "resflow", "--data", "moons", "--out", str(out), "--steps", "30",
            "--lr", "10", "--batch-size", "64", "--eval-every", "15", "--quiet"]
    code = main(args)
    err = capsys.readouterr().err
    assert code in (0, 3) and "Traceback" not in err, err
    assert (out / "curves.png").stat().st_size > 0
