"""The hybrid parts of ``jflows train`` and ``jflows eval`` (runs of ``--hybrid-lambda``).

A hybrid run (:mod:`jflows.training.hybrid_run`) is trained in one process and reports its
test accuracy beside its NLL; ``jflows eval`` on it adds the accuracy on the labels of the data
(``digits``' own, or a ``.npy`` of integer labels), and ``jflows sample`` draws from its flow
as from any run.
"""

from __future__ import annotations

import os

from jflows.errors import ConfigError
from jflows.training.figures import describe, read_figure
from jflows.training.hybrid_run import (
    evaluate_hybrid_run,
    is_hybrid,
    labels_for_eval,
    train_hybrid_run,
)
from jflows.training.lock import run_lock
from jflows.training.runs import CONFIG_FILE, read_config


def train_hybrid(args, settings: dict) -> int:
    """``jflows train --hybrid-lambda L``: a hybrid model on labelled data (one process).

    ``settings`` are the run settings of the command line (as for any ``jflows train``).
    """
    if args.devices not in (None, 1) or args.num_processes not in (None, 1):
        raise ConfigError("--hybrid-lambda trains on one device; drop --devices/--num-processes")
    with run_lock(args.out):
        m = train_hybrid_run(
            settings, args.out, lam=args.hybrid_lambda, labels=args.labels
        )
    bpd = read_figure(m, "test", "bits_per_dim")
    line = f"step {m['steps']}: test accuracy {m['test_accuracy']:.4f}"
    line += f", {describe('test', 'nll', m)} {read_figure(m, 'test', 'nll'):.4f} nats"
    line += "" if bpd is None else f", {bpd:.4f} bits/dim"
    print(f"{line} (hybrid, lambda {args.hybrid_lambda:g}; run in {args.out})")
    return 0


def hybrid_accuracy(args, run, x, record: dict) -> str:
    """A hybrid run's accuracy on ``x`` into ``record``; the text for the printed line."""
    y, why = labels_for_eval(args.data, run.config, len(x), getattr(args, "labels", None))
    if y is None:
        return f" (hybrid run: {why}, so no classification figure)"
    record["accuracy"] = evaluate_hybrid_run(run, x, y)["accuracy"]
    return f", accuracy {record['accuracy']:.4f}"


def refuse_hybrid_plot(run_dir: str) -> None:
    """``jflows plot`` on a hybrid run: a ConfigError saying it has no curves to draw."""
    if os.path.isfile(os.path.join(run_dir, CONFIG_FILE)) and is_hybrid(read_config(run_dir)):
        raise ConfigError(
            f"{run_dir!r} is a hybrid run (jflows train --hybrid-lambda), which records no "
            f"training curves (it is evaluated once, at the end: see its metrics.json); plot "
            f"runs of plain jflows train"
        )
