"""Bad input to the CLI: one clear message on stderr, exit code 2, no traceback, no writes."""

import hashlib
import os

import numpy as np
import pytest
from helpers import cli_fails as fails
from helpers import cli_one_line as one_line

from jflows.cli import main, parse_options

TINY = ["--opt", "n_couplings=2", "--opt", "hidden=(8,)"]


def snapshot(directory):
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[path] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "--model", "realnvp", "--data", "moons", "--out", str(out), "--steps", "3",
            "--batch-size", "32", "--quiet", *TINY]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    d = tmp_path_factory.mktemp("arrays")
    rng = np.random.default_rng(0)
    items = {
        "rank3.npy": rng.normal(size=(10, 4, 4)).astype(np.float32),
        "ints.npy": rng.integers(0, 5, size=(10, 2)),
        "nan.npy": np.where(np.arange(20).reshape(10, 2) == 7, np.nan, 1.0),
        "bright.npy": np.full((10, 4, 4, 1), 200, np.uint8),
        "vec3.npy": rng.normal(size=(10, 3)).astype(np.float32),
        "vec1.npy": rng.normal(size=(10, 1)).astype(np.float32),
    }
    for name, x in items.items():
        np.save(d / name, x)
    return d


def train(out, *extra, model="realnvp", data="moons"):
    return ["train", "--model", model, "--data", data, "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize(
    ("name", "extra", "needles"),
    [
        ("rank3.npy", [], ["rank 3", "x[..., None]"]),
        ("ints.npy", [], ["int64", "astype"]),
        ("nan.npy", [], ["NaN"]),
        ("bright.npy", ["--levels", "17"], ["200", "--levels"]),
    ],
)
def test_bad_npy_data(capsys, tmp_path, arrays, name, extra, needles):
    out = tmp_path / "new"
    fails(capsys, train(out, *extra, data=str(arrays / name)), name, *needles)
    assert not out.exists()


def test_unknown_model_and_data(capsys, tmp_path):
    fails(capsys, train(tmp_path / "a", model="realnvq"), "'realnvq'", "nice")
    fails(capsys, train(tmp_path / "b", data="8gausians"), "'8gausians'", "8gaussians")
    fails(capsys, train(tmp_path / "c", data="missing.npy"), "missing.npy", "does not exist")
    assert not os.listdir(tmp_path)


def test_bad_model_options(capsys, tmp_path):
    fails(capsys, train(tmp_path / "a", "--opt", "depth=3"), "'depth'", "n_couplings")
    fails(capsys, train(tmp_path / "b", "--opt", "n_couplings"), "'n_couplings'", "key=value")
    fails(capsys, train(tmp_path / "c", "--opt", "n_couplings=3"), "n_couplings", "3")
    fails(capsys, train(tmp_path / "d", "--levels", "17"), "levels=17", "moons")
    fails(capsys, train(tmp_path / "e", "--steps", "0"), "--steps", "0")
    fails(capsys, train(tmp_path / "f", "--logit-alpha", "0.05"), "--logit-alpha", "0.05")
    assert not os.listdir(tmp_path)


def test_argparse_errors_exit_2(capsys):
    assert main(["train", "--model", "realnvp"]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "Traceback" not in err
    assert main(["fly"]) == 2


def test_existing_run_is_never_overwritten(capsys, run_dir, tmp_path):
    before = snapshot(run_dir)
    fails(capsys, train(run_dir, *TINY, model="nice"), "'realnvp'", "'nice'", "--out")
    fails(capsys, train(run_dir, *TINY, data="8gaussians"), "'moons'", "'8gaussians'")
    fails(capsys, train(run_dir, "--opt", "n_couplings=4"), "n_couplings")
    fails(capsys, train(run_dir, *TINY, "--seed", "5"), "seed")
    assert snapshot(run_dir) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    fails(capsys, train(other, *TINY), "notes", "not a jflows run")
    assert os.listdir(other) == ["notes.txt"]


def test_eval_and_sample_bad_input(capsys, run_dir, arrays, tmp_path):
    before = snapshot(run_dir)
    fails(capsys, ["eval", "--run", str(tmp_path), "--data", "moons"], str(tmp_path), "config.json")
    fails(capsys, ["eval", "--run", str(tmp_path / "nope"), "--data", "moons"], "does not exist")
    fails(capsys, ["eval", "--run", str(run_dir), "--data", str(arrays / "vec3.npy")],
          "vec3.npy", "(3,)", "(2,)")
    fails(capsys, ["eval", "--run", str(run_dir), "--data", "digits"], "'digits'", "(8, 8, 1)")
    fails(capsys, ["eval", "--run", str(run_dir), "--data", str(arrays / "nan.npy")], "NaN")
    fails(capsys, ["sample", "--run", str(run_dir), "--n", "5", "--out", str(tmp_path / "s.txt")],
          "s.txt", ".npy")
    fails(capsys, ["sample", "--run", str(run_dir), "--n", "0", "--out", str(tmp_path / "s.npy")],
          "--n")
    assert snapshot(run_dir) == before


def test_parse_options():
    assert parse_options(["hidden=(64, 64)", "scale_map=tanh", "actnorm=True"]) == {
        "hidden": (64, 64), "scale_map": "tanh", "actnorm": True,
    }


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--seed", "-1"], ["--seed", "-1"]),
        (["--seed", str(2**32)], ["--seed", str(2**32)]),
        (["--temperature", "nan"], ["--temperature", "nan"]),
        (["--temperature", "-0.5"], ["--temperature", "-0.5"]),
        (["--temperature", "inf"], ["--temperature", "inf"]),
        (["--steps", "0"], ["--steps", "0"]),
        (["--steps", "2.5"], ["--steps", "2.5"]),
        (["--batch-size", "-3"], ["--batch-size", "-3"]),
        (["--eval-every", "0"], ["--eval-every"]),
        (["--checkpoint-every", "-1"], ["--checkpoint-every"]),
        (["--levels", "0"], ["--levels"]),
        (["--n-bits", "0"], ["--n-bits"]),
        (["--devices", "0"], ["--devices"]),
    ],
)
def test_bad_numbers_one_line_exit_2_nothing_written(capsys, tmp_path, extra, needles):
    out = tmp_path / "run"
    one_line(capsys, train(out, *TINY, *extra), *needles)
    assert not out.exists()


def test_random_bytes_are_not_a_valid_npy(capsys, tmp_path):
    rng = np.random.default_rng(1)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(rng.bytes(1000))
    bad_header = tmp_path / "header.npy"
    bad_header.write_bytes(b"\x93NUMPY" + rng.bytes(1000))
    for path in (junk, bad_header):
        err = one_line(capsys, train(tmp_path / "run", data=str(path)), str(path),
                       "not a valid .npy", "numpy.save")
        assert "allow_pickle" not in err and "pickle.load" not in err
    assert not (tmp_path / "run").exists()


def test_sample_bad_numbers(capsys, run_dir, tmp_path):
    before = snapshot(run_dir)
    out = tmp_path / "s.npy"
    base = ["sample", "--run", str(run_dir), "--n", "5", "--out", str(out)]
    one_line(capsys, [*base, "--seed", "-1"], "--seed")
    one_line(capsys, [*base, "--temperature", "nan"], "--temperature")
    one_line(capsys, [*base, "--temperature", "-1"], "--temperature")
    one_line(capsys, [*base[:4], "-2", *base[5:]], "--n")
    assert not out.exists() and snapshot(run_dir) == before


def test_version_and_help_list_models_data_and_defaults(capsys):
    import jflows
    from jflows.cli import DEFAULTS
    from jflows.data import BUILTIN_DATA
    from jflows.models import MODELS

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jflows {jflows.__version__}"
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in [*MODELS, *BUILTIN_DATA]:
        assert name in text, name
    for kind in ("vector", "image"):
        for key in ("steps", "batch_size", "lr", "eval_every", "checkpoint_every"):
            flag = f"--{key.replace('_', '-')}"
            assert f"{flag} {DEFAULTS[kind][key]}" in text, (flag, kind)


@pytest.mark.parametrize("model", ["realnvp", "nice", "glow"])
def test_one_dimensional_data_refused_before_any_write(capsys, tmp_path, arrays, model):
    out = tmp_path / "run"
    one_line(capsys, train(out, model=model, data=str(arrays / "vec1.npy")), model, "(1,)")
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".png", ".npy"])
def test_sample_refuses_nonfinite_samples(capsys, run_dir, tmp_path, monkeypatch, suffix):
    from jflows.cli import commands

    monkeypatch.setattr(commands, "draw_samples", lambda *a, **k: np.full((5, 2), np.nan))
    out = tmp_path / f"s{suffix}"
    one_line(capsys, ["sample", "--run", str(run_dir), "--n", "5", "--out", str(out)],
             "5 of 5 samples", "not finite")
    assert not out.exists()
