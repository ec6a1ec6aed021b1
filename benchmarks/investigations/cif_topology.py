"""CIF against RealNVP on 8gaussians over seeds: test bounds and bi-Lipschitz estimates.

The topology argument of the CIF paper (Cornish et al., 2020): a bijection between the
standard normal's connected support and the eight separated Gaussians' must have a large
bi-Lipschitz constant; a continuously indexed flow (CIF) only needs each per-index map
``F(.; u)`` to be a bijection, so it can tear the plane with small constants.

The models are small, as in the CIF paper's 2-D RealNVP experiment (one coupling block), where
the topology binds. For every seed, three ``jflows train`` runs (subprocesses, the README's
command line), equal steps:

* ``realnvp h13``: RealNVP, a pair of affine couplings on alternating halves with MLPs
  (13, 13): 472 parameters;
* ``realnvp h10``: the same RealNVP as inside the CIF, MLPs (10, 10): 304 parameters;
* ``cif``: CIF around that RealNVP, one indexed layer, a 1-D index u with q(u | x), p(u | z)
  and s(u), t(u) MLPs of width 10: 472 parameters.

Each run is evaluated with ``jflows eval --lipschitz`` (test NLL, exact for RealNVP and the
ELBO for CIF; bi-Lipschitz estimates over 1000 test points and over the picture's grid of the
plane around the data, CIF's per-index maps with the index at the mean of q(u | x)) and
``jflows eval --iw 64`` (CIF's IWBO with 64 importance samples). Lower is better throughout.

Run (from the repository root; about 8 minutes on two quiet CPU cores)::

    python -m benchmarks.investigations.cif_topology --seeds 0 1 2

Add ``--steps N`` to change the training steps, ``--work DIR`` to keep the runs and
``--reuse`` to re-evaluate the runs kept there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchmarks.investigations.surjections import parameter_count, train

DATA = "8gaussians"
STEPS = 10_000
CIF = ["--model", "cif", "--opt", "layers=1", "--opt", "hidden=(10, 10)",
       "--opt", "index_hidden=(10,)", "--opt", "index_init=random"]
VARIANTS = {
    "realnvp h13": ["--model", "realnvp", "--opt", "n_couplings=2", "--opt", "hidden=(13, 13)"],
    "realnvp h10": ["--model", "realnvp", "--opt", "n_couplings=2", "--opt", "hidden=(10, 10)"],
    "cif": CIF,
}


def evaluate(out: str, *extra: str) -> dict:
    """``jflows eval --run out --data 8gaussians ...``; returns its eval.json."""
    command = [sys.executable, "-m", "jflows.cli", "eval", "--run", out, "--data", DATA, *extra]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    with open(os.path.join(out, "eval.json")) as f:
        return json.load(f)


def figures(out: str) -> dict:
    """Test bound (ELBO or exact NLL), IWBO_64 and the bi-Lipschitz figures of one run."""
    first = evaluate(out, "--lipschitz")
    lip = first["lipschitz"]
    nll = first.get("nll", first.get("nll_bound"))
    stochastic = "nll_bound" in first
    iwbo = evaluate(out, "--iw", "64")["nll_bound"] if stochastic else nll
    return {"nll": nll, "iwbo": iwbo, "se": first.get("nll_stderr", first.get("nll_bound_stderr")),
            "plane": lip["plane"]["bi_lipschitz"], "data": lip["bi_lipschitz"],
            "f_q50": lip["forward_q50"], "inv_q50": lip["inverse_q50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--work", help="directory for the runs (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate runs already in --work instead of training them again")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="jflows_cif_")
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for seed in args.seeds:
        for name, variant in VARIANTS.items():
            out = os.path.join(work, f"{name.replace(' ', '_')}_seed{seed}")
            run_args = [*variant, "--data", DATA, "--steps", str(args.steps)]
            done = os.path.join(out, "metrics.json")
            if args.reuse and os.path.exists(done):  # evaluate the run already there
                with open(done) as f:
                    metrics = {"seconds": json.load(f).get("wall_time_s", float("nan"))}
            else:
                metrics = train([*run_args, "--seed", str(seed)], out)
            row = {**figures(out), "params": parameter_count(out), "seconds": metrics["seconds"],
                   "command": " ".join(["jflows", "train", *run_args])}
            results[name].append(row)
            print(f"seed {seed}  {name:12s} NLL/-ELBO {row['nll']:.4f} (se {row['se']:.4f}) "
                  f"-IWBO64 {row['iwbo']:.4f}  bi-Lipschitz plane {row['plane']:.3g} data "
                  f"{row['data']:.3g}  ({row['params']:,} parameters, {row['seconds']:.0f} s)",
                  flush=True)
    print(f"\n{DATA}, {args.steps} steps, seeds {args.seeds}; test NLL in nats (CIF: -ELBO and "
          f"-IWBO_64, bounds of its NLL), bi-Lipschitz = max Lip(f) x max Lip(f^-1)\n")
    print("| model | params | NLL / -ELBO per seed | -IWBO64 per seed | bi-Lip. plane per seed "
          "| bi-Lip. data per seed | median Lip(f), Lip(f^-1) |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        def col(key, fmt, rows=rows):
            return ", ".join(format(r[key], fmt) for r in rows)
        medians = (f"{statistics.mean(r['f_q50'] for r in rows):.2f}, "
                   f"{statistics.mean(r['inv_q50'] for r in rows):.2f}")
        print(f"| {name} | {rows[0]['params']:,} | {col('nll', '.4f')} | {col('iwbo', '.4f')} | "
              f"{col('plane', '.3g')} | {col('data', '.3g')} | {medians} |")
    for name, rows in results.items():
        print(f"{name}: {rows[0]['command']} --seed S")
    print(f"runs in {work}")


if __name__ == "__main__":
    main()
