"""A small real table: jflows' command-line RealNVP or NSF (defaults) against flowjax's flow.

``--model nsf`` compares jflows' spline coupling flow with flowjax's ``coupling_flow`` with a
``RationalQuadraticSpline(knots=8, interval=4)`` transformer (flowjax's documented spline
flow), each with its own defaults; the default ``--model realnvp`` uses flowjax's ``Affine``.

scikit-learn's breast-cancer table (569 rows, 30 continuous columns) is saved as a float
``.npy``. For each seed, ``jflows train --model realnvp --data FILE --seed S`` runs with its
defaults (for a table this small: a 0.2 test split, a 0.1 validation split of the training
rows, evaluations every 20 steps, early stopping and the best state, AdamW with weight
decay 10), and flowjax's
``coupling_flow(key, base_dist=Normal(zeros(30)), transformer=Affine())`` is trained with
``fit_to_data(key, flow, x_train)`` and flowjax's own defaults on the same training rows
(jflows' training and validation rows; flowjax holds out its own validation split). flowjax
sees the rows standardised with jflows' numbers (mean and std of the training split), and its
log-density is moved back to raw units by subtracting ``sum(log std)``, so both NLLs are
nats per row of the raw table on the same test rows.

Run:
    python -m benchmarks.investigations.tabular_breast_cancer --seeds 0 1 2 [--model nsf]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def save_table(directory: str) -> str:
    """Saves the breast-cancer table as float64 ``.npy`` and returns its path."""
    from sklearn.datasets import load_breast_cancer

    path = os.path.join(directory, "breast_cancer.npy")
    np.save(path, load_breast_cancer().data.astype(np.float64))
    return path


def run_jflows(path: str, seed: int, out: str, extra: list[str], model: str = "realnvp") -> dict:
    """``jflows train`` with its defaults; returns metrics.json plus the config's split."""
    args = [
        sys.executable,
        "-m",
        "jflows.cli",
        "train",
        "--model",
        model,
        "--data",
        path,
        "--out",
        out,
        "--seed",
        str(seed),
        "--quiet",
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"jflows train failed ({result.returncode}): {result.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    metrics["seconds"] = time.perf_counter() - started
    return {**metrics, "config": config}


def run_flowjax(
    x_train: np.ndarray, x_test: np.ndarray, mean, std, seed: int, model: str = "realnvp"
) -> dict:
    """Trains flowjax's coupling flow with its defaults; scores in raw-data nats.

    The transformer is ``Affine`` (``model="realnvp"``) or an 8-knot spline (``"nsf"``).
    """
    import jax
    import jax.numpy as jnp
    from flowjax.bijections import Affine, RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow
    from flowjax.train import fit_to_data

    mean, std = np.asarray(mean), np.asarray(std)
    key, train_key = jax.random.split(jax.random.key(seed))
    dims = x_train.shape[1]
    transformer = RationalQuadraticSpline(knots=8, interval=4) if model == "nsf" else Affine()
    flow = coupling_flow(key, base_dist=Normal(jnp.zeros(dims)), transformer=transformer)
    started = time.perf_counter()
    flow, losses = fit_to_data(
        train_key, flow, jnp.asarray((x_train - mean) / std), show_progress=False
    )
    log_p = flow.log_prob(jnp.asarray((x_test - mean) / std)) - np.sum(np.log(std))
    return {
        "test_nll": float(-np.mean(np.asarray(log_p, np.float64))),
        "epochs": len(losses["train"]),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", choices=("realnvp", "nsf"), default="realnvp")
    parser.add_argument("--work", help="directory for the table and the runs (default: temp)")
    parser.add_argument(
        "--jflows-arg",
        action="append",
        default=[],
        help="extra argument of jflows train (repeat), e.g. --jflows-arg=--lr",
    )
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="jflows_bc_")
    os.makedirs(work, exist_ok=True)
    path = save_table(work)

    from jflows.data import load_dataset

    rows = []
    for seed in args.seeds:
        out = os.path.join(work, f"{args.model}_seed{seed}")
        jf = run_jflows(path, seed, out, args.jflows_arg, args.model)
        config = jf["config"]
        data = load_dataset(path, seed=config["seed"], test_fraction=config["test_fraction"])
        assert len(data.test) == config["n_test"] == jf["n_test"]
        fj = run_flowjax(data.train, data.test, config["mean"], config["std"], seed, args.model)
        rows.append((seed, jf, fj))

    first = rows[0][1]
    print(
        f"breast cancer: {first['n_train'] + first['n_test']} rows x {first['dims']} columns; "
        f"split per seed: {first['n_train']} training rows for both (jflows: "
        f"{first['n_fit']} fit + {first['n_val']} validation), {first['n_test']} test rows "
        f"scored by both"
    )
    print("test NLL in nats per row of the raw table (lower is better)")
    head = (
        f"{'seed':>4}  {'jflows ' + args.model + ' (CLI)':>20}  {'val NLL':>8}  "
        f"{'best/steps':>10}  {'s':>5}  {'flowjax coupling':>16}  {'epochs':>6}  {'s':>5}"
    )
    print(head)
    print("-" * len(head))
    for seed, jf, fj in rows:
        print(
            f"{seed:>4}  {jf['test_nll']:>20.2f}  {jf['val_nll']:>8.2f}  "
            f"{str(jf['best_step']) + '/' + str(jf['steps']):>10}  {jf['seconds']:>5.0f}  "
            f"{fj['test_nll']:>16.2f}  {fj['epochs']:>6}  {fj['seconds']:>5.0f}"
        )
    jmean = np.mean([jf["test_nll"] for _, jf, _ in rows])
    fmean = np.mean([fj["test_nll"] for _, _, fj in rows])
    print(f"{'mean':>4}  {jmean:>20.2f}  {'':>8}  {'':>10}  {'':>5}  {fmean:>16.2f}")
    print(
        f"command: jflows train --model {args.model} --data {path} --seed S "
        f"{' '.join(args.jflows_arg)}".rstrip()
    )


if __name__ == "__main__":
    main()
