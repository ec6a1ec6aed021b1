"""Damaged checkpoints: train, eval and sample fall back to the newest one that loads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jflows.cli import main

ARGS = ["--opt", "n_couplings=2", "--opt", "hidden=(8,)", "--batch-size", "32", "--quiet",
        "--eval-every", "10", "--checkpoint-every", "10"]


def train_args(out, steps):
    return ["train", "--model", "realnvp", "--data", "moons", "--out", str(out),
            "--steps", str(steps), *ARGS]


def damage(step_dir, only_arrays=False):
    """Overwrites the files of a checkpoint step directory (or only its array data)."""
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            if only_arrays and f"{os.sep}d{os.sep}" not in path:
                continue
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.write(np.random.default_rng(len(path)).bytes(max(size, 16)))


@pytest.mark.slow
@pytest.mark.parametrize("only_arrays", [False, True])
def test_damaged_newest_checkpoint_falls_back(tmp_path, capsys, only_arrays):
    out = tmp_path / "run"
    assert main(train_args(out, 40)) == 0
    assert sorted(os.listdir(out / "checkpoints")) == ["30", "40"]
    damage(out / "checkpoints" / "40", only_arrays)
    capsys.readouterr()

    assert main(["eval", "--run", str(out), "--data", "moons"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "checkpoints/40 is damaged" in err, err
    assert len(err.strip().splitlines()) == 1
    assert json.loads((out / "eval.json").read_text())["step"] == 30
    if only_arrays:  # TensorStore's failed read leaves callbacks that must not print either
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        result = subprocess.run([sys.executable, "-m", "jflows.cli", "eval", "--run", str(out),
                                 "--data", "moons"], capture_output=True, text=True, env=env,
                                timeout=300)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert main(["sample", "--run", str(out), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    assert "checkpoints/40 is damaged" in capsys.readouterr().err

    assert main(train_args(out, 40)) == 0  # resumes from 30 and writes step 40 again
    err = capsys.readouterr().err
    assert "Traceback" not in err and "resuming from step 30" in err, err
    assert (out / "damaged_checkpoints" / "40").is_dir()
    assert sorted(os.listdir(out / "checkpoints")) == ["30", "40"]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40
    assert main(["eval", "--run", str(out), "--data", "moons"]) == 0
    assert "damaged" not in capsys.readouterr().err


@pytest.mark.slow
def test_no_loadable_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out, 20)) == 0
    for step in ("10", "20"):
        damage(out / "checkpoints" / step)
    capsys.readouterr()
    for args in (["eval", "--run", str(out), "--data", "moons"],
                 ["sample", "--run", str(out), "--n", "5", "--out", str(tmp_path / "s.npy")],
                 train_args(out, 30)):
        assert main(args) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert "Traceback" not in err and len(lines) == 1, err
        assert "no checkpoint" in lines[0] and "step 20" in lines[0] and "step 10" in lines[0]
