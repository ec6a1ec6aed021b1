"""The ``jflows train`` flags: model, data, training, hybrid, devices and the optimizer.

A run's settings come from the flags given, else (resuming) the run's ``config.json``, else the
defaults of :mod:`jflows.training.defaults` (which the help texts quote, per data kind and
model); :func:`jflows.training.setup.prepare_run` merges them.

Example:
    >>> parser = argparse.ArgumentParser(prog="jflows")
    >>> train = add_train_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["train", "--model", "realnvp", "--data", "moons", "--out", "r"])
    >>> args.model, args.steps, args.hybrid_lambda
    ('realnvp', None, None)
"""

from __future__ import annotations

import argparse

from jflows.cli.argument_types import nonnegative_int, positive_int, seed_int, temperature_float
from jflows.data import BUILTIN_DATA
from jflows.models import MODELS
from jflows.training import defaults as _defaults
from jflows.training.defaults import DEFAULTS, MODEL_DEFAULTS


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--compile-cache DIR``, ``--no-compile-cache`` and ``--cpu-dispatch async|sync``.

    The first two choose JAX's persistent compilation cache; the last how JAX runs programs on
    CPU (``jax_cpu_enable_async_dispatch``, which the CLI sets before its first computation).
    """
    parser.add_argument(
        "--compile-cache", metavar="DIR",
        help="directory of the persistent compilation cache (and of the traced steps), so that "
        "the next run of the same model skips compiling and tracing (default: "
        "$JFLOWS_COMPILATION_CACHE or ~/.cache/jflows/xla)",
    )
    parser.add_argument(
        "--no-compile-cache", action="store_true",
        help="do not read or write the compilation cache or the traced steps (also "
        "JFLOWS_COMPILATION_CACHE=off)",
    )
    parser.add_argument(
        "--cpu-dispatch", choices=("async", "sync"),
        help="how JAX runs each step on CPU: async (JAX's default: on a worker thread, while "
        "Python goes on) or sync (in the calling thread; an image flow's resident memory then "
        "stops creeping up while it trains, W4: 513 vs 587 MB peak at the same speed, but "
        "small dense flows lose about 12%% per step)",
    )


def add_train_parser(sub) -> argparse.ArgumentParser:
    """Adds the ``train`` subcommand and its flags to the subparsers ``sub``; returns it."""
    train = sub.add_parser("train", help="train a flow (resumes when --out holds a run)")
    train.add_argument("--model", required=True, help=f"one of {', '.join(MODELS)}")
    train.add_argument(
        "--data", required=True,
        help=f"a built-in name ({', '.join(BUILTIN_DATA)}) or the path of a .npy file",
    )
    train.add_argument(
        "--context", metavar="C.npy",
        help="train a conditional model p(x | c): a .npy of one float context row per row of "
        "a .npy --data, shape (N,) or (N, k); conditional built-ins (conditional-ring) bring "
        "their own",
    )
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--steps", type=positive_int, help=_default_help("steps", "training steps"))
    train.add_argument("--seed", type=seed_int, help="random seed, 0 .. 2**32-1 (default 0)")
    train.add_argument(
        "--batch-size", type=positive_int, help=_default_help("batch_size", "rows per step")
    )
    train.add_argument(
        "--lr", type=float, help=_default_help("lr", "peak learning rate")
    )
    train.add_argument(
        "--levels", type=positive_int, help="grey levels of uint8 image data, 2 .. 256"
    )
    train.add_argument(
        "--n-bits", type=positive_int,
        help="reduce images to 2**n_bits levels (Glow's 5-bit setting)",
    )
    train.add_argument(
        "--temperature", type=temperature_float,
        help="temperature of the pictures, >= 0 (default 0.7 for glow, else 1)",
    )
    train.add_argument(
        "--eval-every", type=positive_int, help=_default_help("eval_every", "steps between tests")
    )
    train.add_argument(
        "--checkpoint-every", type=positive_int,
        help=_default_help("checkpoint_every", "steps between checkpoints"),
    )
    train.add_argument("--logit-alpha", type=float, help="logit pre-processing of images")
    train.add_argument(
        "--dequantization", choices=("uniform", "variational"),
        help="dequantization of images: uniform noise (default) or Flow++'s variational "
        "noise from a learned conditional flow; of vectors: uniform noise over one step of "
        "each column whose values lie on a lattice (counts, codes, rounded values)",
    )
    train.add_argument(
        "--opt", action="append", metavar="KEY=VALUE",
        help="model option, a Python literal or a string (see `jflows models MODEL`)",
    )
    train.add_argument(
        "--hybrid-lambda", type=float, metavar="L",
        help="train a hybrid model (classifier head on the flow's latent) on labelled data with "
        "loss -(log p(y|x) + L log p(x) / D); reports test accuracy",
    )
    train.add_argument(
        "--labels", help="with --hybrid-lambda: .npy of integer labels of a .npy data file "
        "(default: DATA_labels.npy beside it)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--devices", type=positive_int,
        help="data-parallel over this many local devices (default 1)",
    )
    train.add_argument(
        "--coordinator", help="host:port of process 0, to train on several hosts (see README)"
    )
    train.add_argument(
        "--num-processes", type=positive_int, help="number of processes (hosts)"
    )
    train.add_argument(
        "--process-id", type=nonnegative_int, help="this process's index, 0 .. n-1"
    )
    _add_optimizer_arguments(train)
    train.epilog = "\n\n".join(p for p in (_catalogue(), train.epilog) if p)
    add_runtime_arguments(train)
    return train


def _default_help(key: str, what: str) -> str:
    """``what`` plus the default of ``key`` per data kind (and per model, where it differs)."""
    text = f"{what} (default {DEFAULTS['vector'][key]} for vectors"
    small = getattr(_defaults, "SMALL_VECTOR_DEFAULTS", {})
    if key in small:
        text += f" ({small[key]} below 10000 training rows)"
    text += f", {DEFAULTS['image'][key]} for images"
    for (model, kind), values in MODEL_DEFAULTS.items():
        if key in values:
            text += f", {values[key]} for {model} on {kind}s"
    return text + ")"


def _catalogue() -> str:
    """The ``jflows train --help`` epilog: models, built-in data and the defaults."""
    keys = ("steps", "batch_size", "lr", "eval_every", "checkpoint_every")
    lines = [
        f"models: {', '.join(MODELS)} (options: --opt KEY=VALUE, any keyword of the factory in "
        f"jflows.models, checked against its type; `jflows models NAME` lists them)",
        f"built-in data: {', '.join(BUILTIN_DATA)}; or a .npy file of float (N, d) vectors or "
        f"uint8 (N, H, W, C) images",
    ]
    for kind in ("vector", "image"):
        values = ", ".join(f"--{k.replace('_', '-')} {DEFAULTS[kind][k]}" for k in keys)
        lines.append(f"defaults for {kind}s: {values}")
    return "\n\n".join(lines)


EXIT_CODES = (
    "exit codes: 0 done; 2 bad input (one line on stderr, nothing written); 3 training "
    "diverged (non-finite figures, or more than half of the steps since the previous "
    "evaluation skipped as non-finite; the run's files are written, metrics.json says "
    "\"diverged\": true); 130 interrupted (rerun the same command to resume)"
)
"""The exit codes of ``jflows train`` (its ``--help`` epilog)."""


def _add_optimizer_arguments(train: argparse.ArgumentParser) -> None:
    """Flags of the optimizer, the validation split and early stopping (``jflows train``)."""
    train.epilog = EXIT_CODES
    train.add_argument(
        "--schedule", choices=("cosine", "constant"),
        help="learning-rate schedule after the warm-up (default cosine decay to 1%% of --lr)",
    )
    train.add_argument(
        "--warmup-steps", type=int, help="linear warm-up of the learning rate (default 0)"
    )
    train.add_argument(
        "--grad-clip", type=float, help="clip gradients to this global norm (default: none)"
    )
    small = _small_defaults()
    train.add_argument(
        "--weight-decay", type=float,
        help=f"AdamW's decoupled weight decay (default {small['weight_decay']} for vector data "
        f"with fewer than 10000 training rows, else 0: plain Adam)",
    )
    train.add_argument(
        "--val-fraction", type=float,
        help=f"fraction of the training rows held out for validation, best-state selection "
        f"and early stopping (default {small['val_fraction']} below 10000 training rows, "
        f"else 0)",
    )
    train.add_argument(
        "--patience", type=int,
        help=f"evaluations without a better validation NLL before stopping (default "
        f"{small['patience']} with a validation split; 0 never stops early)",
    )


def _small_defaults() -> dict:
    from jflows.training.defaults import SMALL_VECTOR_DEFAULTS

    return SMALL_VECTOR_DEFAULTS
