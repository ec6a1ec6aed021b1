"""Runs in its own process with XLA_FLAGS=--xla_force_host_platform_device_count=4.

Runs ``fit`` on one device and on four while recording every line of ``jflows/training`` that
runs (``sys.settrace``), and prints as JSON the lines only one of the two runs ran, and how far
apart their results are. Usage: ``fit_paths.py OUT_DIR``.
"""

import json
import os
import sys

import jax
import numpy as np

import jflows.training
from jflows import models as jm
from jflows.data import load_dataset, vector_stats
from jflows.training import fit

assert jax.device_count() == 4, jax.devices()
TRAINING = os.path.dirname(jflows.training.__file__)


def max_diff(a, b):
    diffs = [float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return max(diffs, default=0.0)


def traced_fit(devices, out_dir):
    """``fit`` of a small residual flow on moons, and the lines of jflows/training it ran."""
    ran = set()

    def lines(frame, event, arg):
        if event == "line":
            ran.add(f"{os.path.relpath(frame.f_code.co_filename, TRAINING)}:{frame.f_lineno}")
        return lines

    def calls(frame, event, arg):
        return lines if frame.f_code.co_filename.startswith(TRAINING) else None

    ds = load_dataset("moons", n_train=512, n_test=256)
    flow = jm.resflow((2,), n_blocks=1, hidden=(8,), logdet="exact",
                      preprocessing=jm.vector_preprocessing(*vector_stats(ds.train)))
    sys.settrace(calls)
    try:
        state, history = fit(flow, flow, ds, steps=6, batch_size=32, eval_every=3,
                             checkpoint_every=3, eval_batch_size=64, progress=False,
                             out_dir=out_dir, devices=devices, val_fraction=0.1, seed=1)
    finally:
        sys.settrace(None)
    with open(os.path.join(out_dir, "metrics.json")) as f:
        metrics = json.load(f)
    return jax.tree.map(np.asarray, state.params), history, ran, metrics


def main():
    root = sys.argv[1]
    one, four = (traced_fit(n, os.path.join(root, str(n))) for n in (1, 4))
    print(json.dumps({
        "only_one_device": sorted(one[2] - four[2]),
        "only_four_devices": sorted(four[2] - one[2]),
        "lines_ran": len(one[2]),
        "params": max_diff(one[0], four[0]),
        "test_nll": [r[3]["test_nll"] for r in (one, four)],
        "val_nll": [r[3]["val_nll"] for r in (one, four)],
        "steps": [[e["step"] for e in r[1]] for r in (one, four)],
    }))


if __name__ == "__main__":
    main()
