"""Vector files whose columns or rows have no density, run through ``jflows train``.

The figures of the README's "Constant and discrete columns".

Files (made here, seeded):

* ``const.npy``: two standard normal columns and a constant 3 (20 000 rows);
* ``mixed.npy``: a standard normal column, a binary one and a five-valued one (20 000 rows;
  the exact mixed entropy is ``0.5 log(2 pi e) + log 2 + log 5 = 3.72`` nats);
* ``wine.npy`` and ``wine10.npy``: scikit-learn's wine table, and the same saved ten times.

Each run is ``jflows train --model realnvp`` with the CLI's defaults (``train_run``), and the
table prints what each reports: the constant column is refused; the lattice columns fall
without limit unless ``--dequantization uniform`` (then a bound, which ``jflows eval --iw 8``
tightens); the tiled table scores far better than the table itself because its test rows
repeat training rows. The warnings go to stderr as they do for ``jflows train``.

Before the checks (7d8fedc), the constant column was not refused: with the files kept
(``--keep DIR``), ``jflows train --model realnvp --data DIR/const.npy --out r --steps 300`` at
that commit reports the README's -19.4 test nats.

Run:
    python -m benchmarks.investigations.degenerate_columns [--long-steps 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile

import numpy as np


def make_files(directory: str) -> dict[str, str]:
    """Writes the four files above and returns their paths by name."""
    from sklearn.datasets import load_wine

    n = 20_000
    r = np.random.default_rng(0)
    mixed = np.stack([r.normal(size=n), r.integers(0, 2, n), r.integers(0, 5, n)], 1)
    r = np.random.default_rng(0)
    const = np.stack([r.normal(size=n), r.normal(size=n), np.full(n, 3.0)], 1)
    tables = {"mixed": mixed, "const": const, "wine": load_wine().data}
    os.makedirs(directory, exist_ok=True)
    tables["wine10"] = np.tile(tables["wine"], (10, 1))
    paths = {}
    for name, table in tables.items():
        paths[name] = os.path.join(directory, f"{name}.npy")
        np.save(paths[name], table.astype(np.float32))
    return paths


def _read(out: str, name: str) -> dict:
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def _figure(out: str) -> str:
    metrics = _read(out, "metrics.json")
    key = "test_nll_bound" if "test_nll_bound" in metrics else "test_nll"
    return f"{metrics[key]:.4f} ({metrics['likelihood']}, step {metrics['best_step']})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="steps of the mixed-data runs")
    parser.add_argument("--long-steps", type=int, default=10_000,
                        help="steps of the longer run without dequantization (0: none)")
    parser.add_argument("--keep", metavar="DIR", help="write the .npy files to DIR and keep them")
    args = parser.parse_args(argv)
    logging.basicConfig(format="jflows: %(message)s", level=logging.WARNING)

    from jflows.cli import main as cli
    from jflows.errors import DataError
    from jflows.training.setup import train_run

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(args.keep or tmp)
        if args.keep:
            print(f"data files in {args.keep}: {', '.join(sorted(paths))}")
        try:
            train_run("realnvp", paths["const"], os.path.join(tmp, "const"), steps=300)
            rows.append(("const.npy, 300 steps", "trained (the check did not refuse it)"))
        except DataError as err:
            rows.append(("const.npy, 300 steps", f"refused ({type(err).__name__}, exit code 2)"))
        runs = [("mixed.npy", "mixed", args.steps, None)]
        if args.long_steps:
            runs.append(("mixed.npy", "mixed", args.long_steps, None))
        runs += [("mixed.npy --dequantization uniform", "mixed", args.steps, "uniform"),
                 ("wine.npy", "wine", 1500, None), ("wine10.npy", "wine10", 1500, None)]
        for label, name, steps, dequantization in runs:
            out = os.path.join(tmp, f"{name}-{steps}-{dequantization}")
            train_run("realnvp", paths[name], out, steps=steps, dequantization=dequantization,
                      **({"eval_every": 2000} if name == "mixed" else {}))
            rows.append((f"{label}, {steps} steps", _figure(out)))
            if dequantization:
                assert cli(["eval", "--run", out, "--data", paths[name], "--iw", "8"]) == 0
                iwbo = _read(out, "eval.json")
                rows.append((f"  jflows eval --iw 8 (all {iwbo['n']} rows)",
                             f"{iwbo['nll_bound']:.4f}"))
    exact = 0.5 * math.log(2 * math.pi * math.e) + math.log(2) + math.log(5)
    print(f"\n{'run (realnvp, CLI defaults)':<48} test NLL (nats)")
    for label, figure in rows:
        print(f"{label:<48} {figure}")
    print(f"{'mixed.npy: exact mixed entropy':<48} {exact:.4f}")


if __name__ == "__main__":
    main()
