"""``jflows train`` on vector files with constant or lattice columns (tests/test_lattice_columns.py
has the layer and the detection): refused, reported, or dequantized end to end."""

import numpy as np
import pytest
from helpers import read_json as read

from jflows.cli import main
from jflows.data import off_lattice_rows

TINY = ["--opt", "n_couplings=2", "--opt", "hidden=(8,)", "--batch-size", "64", "--quiet"]


def _write(tmp_path, constant=False):
    r = np.random.default_rng(0)
    rows = 600
    x = np.stack([r.normal(size=rows), r.integers(0, 3, rows) * 0.5 + 1.0,
                  np.full(rows, 4.0) if constant else r.normal(size=rows)], 1)
    path = tmp_path / ("constant.npy" if constant else "mixed.npy")
    np.save(path, x.astype(np.float32))
    return path


def test_constant_column_is_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "realnvp", "--data", str(_write(tmp_path, True)),
                 "--out", str(out), "--steps", "5", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "column 2 of" in err and "holds one value (4)" in err
    assert "Traceback" not in err and not out.exists()


def test_vector_data_refuse_variational_dequantization(tmp_path, capsys):
    code = main(["train", "--model", "realnvp", "--data", str(_write(tmp_path)), "--out",
                 str(tmp_path / "run"), "--dequantization", "variational", *TINY])
    assert code == 2 and "only applies to image data" in capsys.readouterr().err


@pytest.mark.slow
def test_lattice_column_is_reported_or_dequantized(tmp_path, capsys):
    data = _write(tmp_path)
    plain, dequantized = tmp_path / "plain", tmp_path / "dequantized"
    base = ["train", "--model", "realnvp", "--data", str(data), "--steps", "20", *TINY]
    assert main([*base, "--out", str(plain)]) == 0
    err = capsys.readouterr().err
    assert "column 1 of" in err and "takes only 3 distinct values" in err
    assert "--dequantization uniform" in err
    assert read(plain / "metrics.json")["likelihood"] == "exact"

    assert main([*base, "--out", str(dequantized), "--dequantization", "uniform"]) == 0
    err = capsys.readouterr().err
    assert "dequantizing column 1 of" in err and "grow without bound" not in err
    config, metrics = read(dequantized / "config.json"), read(dequantized / "metrics.json")
    assert config["lattice_columns"] == [1] and config["lattice_offsets"] == [1.0]
    assert config["lattice_spacings"] == [0.5] and config["lattice_levels"] == [3]
    assert metrics["likelihood"] == "bound" and np.isfinite(metrics["test_nll_bound"])

    samples = tmp_path / "s.npy"
    assert main(["sample", "--run", str(dequantized), "--n", "50", "--out", str(samples)]) == 0
    drawn = np.load(samples)
    assert len(off_lattice_rows(drawn, (1,), (1.0,), (0.5,))) == 0
    assert set(np.unique(drawn[:, 1])) <= {1.0, 1.5, 2.0}

    off = tmp_path / "off.npy"
    np.save(off, np.array([[0.0, 1.25, 0.0]], np.float32))
    capsys.readouterr()
    assert main(["eval", "--run", str(dequantized), "--data", str(off)]) == 2
    assert "off the lattices" in capsys.readouterr().err
    np.save(off, np.array([[0.0, 1.5, 0.0]], np.float32))  # one row on the lattice
    assert main(["eval", "--run", str(dequantized), "--data", str(off)]) == 0
    assert "NLL (bound)" in capsys.readouterr().out
    # a resumed run keeps its dequantization, and may not switch it on
    assert main([*base, "--out", str(dequantized), "--steps", "30"]) == 0
    assert read(dequantized / "config.json")["lattice_columns"] == [1]
    assert read(dequantized / "metrics.json")["steps"] == 30
    capsys.readouterr()
    assert main([*base, "--out", str(plain), "--steps", "30", "--dequantization", "uniform"]) == 2
    assert "dequantization=None" in capsys.readouterr().err
