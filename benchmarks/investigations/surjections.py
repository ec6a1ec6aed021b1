"""SurVAE comparisons from the command line, over seeds: each surjective model against its twin.

Three studies, each a set of ``jflows train`` runs (subprocesses, the README's command line)
whose ``metrics.json`` figures are tabulated side by side:

``absolute``
    ``reflected-moons`` (two moons reflected into all four quadrants: symmetric under every
    coordinate flip). ``--model absolute`` (RealNVP behind the absolute-value surjection) with
    fair-coin signs (``learned_signs=False``: exactly RealNVP's parameters) and with learned
    signs, against ``--model realnvp`` with the same couplings; equal steps. Test NLL (exact for
    all three: the absolute value is an inference surjection).
``dequantization``
    digits, Glow with 2 levels x 4 steps (the W3 model) for 1000 steps, uniform against
    variational (Flow++) dequantization (``--dequantization``); test bits/dim (both bounds:
    one dequantization draw per test image with the fixed evaluation key).
``maxpool``
    digits, ``--model maxpool`` (Glow steps joined by a max-pool surjection); its bits/dim bound.

Run (from the repository root)::

    python -m benchmarks.investigations.surjections absolute --seeds 0 1 2
    python -m benchmarks.investigations.surjections dequantization --seeds 0 1 2
    python -m benchmarks.investigations.surjections maxpool --seeds 0

Add ``--steps N`` to change the number of training steps and ``--work DIR`` to keep the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

COUPLINGS = ["--opt", "n_couplings=8", "--opt", "hidden=(64, 64)"]
GLOW = ["--opt", "levels=2", "--opt", "steps=4", "--opt", "hidden=64"]

STUDIES = {
    "absolute": {
        "data": "reflected-moons",
        "steps": 2000,
        "figure": "test_nll",
        "variants": {
            "realnvp": ["--model", "realnvp", *COUPLINGS],
            "absolute (fair signs)": ["--model", "absolute", *COUPLINGS,
                                      "--opt", "learned_signs=False"],
            "absolute (learned signs)": ["--model", "absolute", *COUPLINGS],
        },
    },
    "dequantization": {
        "data": "digits",
        "steps": 1000,
        "figure": "test_bits_per_dim_bound",
        "variants": {
            "glow, uniform": ["--model", "glow", *GLOW, "--dequantization", "uniform"],
            "glow, variational": ["--model", "glow", *GLOW, "--dequantization", "variational"],
        },
    },
    "maxpool": {
        "data": "digits",
        "steps": 1000,
        "figure": "test_bits_per_dim_bound",
        "variants": {
            "maxpool": ["--model", "maxpool", "--opt", "levels=2", "--opt", "steps=4",
                        "--lr", "2e-3"],
            "glow, uniform": ["--model", "glow", *GLOW],
        },
    },
}


def train(args: list[str], out: str) -> dict:
    """``jflows train ... --out out --quiet``; returns metrics.json plus the seconds taken."""
    command = [sys.executable, "-m", "jflows.cli", "train", *args, "--out", out, "--quiet"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["seconds"] = time.perf_counter() - started
    return metrics


def parameter_count(out: str) -> int:
    """Trainable parameters of the run in ``out`` (counted from its model's shapes)."""
    import jax
    import jax.numpy as jnp

    from jflows.training.runs import build_model, read_config

    config = read_config(out)
    model = build_model(config, training=True)
    x = jnp.zeros((1, *config["event_shape"]))
    rngs = {name: jax.random.key(0) for name in ("params", *model.rng_streams)}
    shapes = jax.eval_shape(lambda: model.init(rngs, x, method="log_prob"))
    return sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="training steps (default: the study's)")
    parser.add_argument("--work", help="directory for the runs (default: a temporary one)")
    args = parser.parse_args()
    study = STUDIES[args.study]
    steps = args.steps or study["steps"]
    work = args.work or tempfile.mkdtemp(prefix=f"jflows_{args.study}_")
    figure = study["figure"]
    results: dict[str, list[dict]] = {name: [] for name in study["variants"]}
    for seed in args.seeds:
        for name, variant in study["variants"].items():
            out = os.path.join(work, f"{name.replace(' ', '_').replace(',', '')}_seed{seed}")
            run_args = [*variant, "--data", study["data"], "--steps", str(steps)]
            metrics = train([*run_args, "--seed", str(seed)], out)
            metrics["command"] = " ".join(["jflows", "train", *run_args])
            metrics["params"] = parameter_count(out)
            results[name].append(metrics)
            print(f"seed {seed}  {name:26s} {figure} {metrics[figure]:.4f}  "
                  f"({metrics['params']:,} parameters, {metrics['seconds']:.0f} s)", flush=True)
    print(f"\n{args.study}: {study['data']}, {steps} steps, seeds {args.seeds}; {figure}\n")
    width = max(map(len, results))
    print(f"| {'model':{width}s} | mean | per seed | parameters | s per run |")
    print(f"|{'-' * (width + 2)}|---|---|---|---|")
    for name, runs in results.items():
        values = [r[figure] for r in runs]
        per_seed = ", ".join(f"{v:.4f}" for v in values)
        seconds = statistics.mean(r["seconds"] for r in runs)
        print(f"| {name:{width}s} | {statistics.mean(values):.4f} | {per_seed} | "
              f"{runs[0]['params']:,} | {seconds:.0f} |")
    for name, runs in results.items():
        print(f"{name}: {runs[0]['command']} --seed S")
    print(f"runs in {work}")


if __name__ == "__main__":
    main()
