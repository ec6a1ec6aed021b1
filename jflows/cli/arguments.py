"""Arguments of the ``jflows`` command: ``--opt`` parsing and the parser.

A run's settings come from the flags given, else (resuming) the run's ``config.json``, else the
defaults of :mod:`jflows.training.defaults`; :func:`jflows.training.setup.prepare_run` merges
them, and a resumed run must agree with its directory on every
:data:`jflows.training.setup.IDENTITY` setting.
"""

from __future__ import annotations

import argparse
import ast
import math
from typing import Any

from jflows import __version__
from jflows.data import BUILTIN_DATA
from jflows.errors import ConfigError
from jflows.models import MODELS
from jflows.training import defaults as _defaults
from jflows.training.defaults import (  # noqa: F401 - the CLI's defaults live in training
    DEFAULTS,
    MODEL_DEFAULTS,
    N_TEST,
    N_TRAIN,
    SAMPLE_TEMPERATURE,
)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` to a dict; values go through ``ast.literal_eval`` (else strings).

    The values are checked against the model factory's types later, by
    :func:`jflows.training.options.coerce_options` (so ``hidden=abc`` is refused there).

    Example:
        >>> parse_options(["hidden=(64, 64)", "scale_map=tanh"])
        {'hidden': (64, 64), 'scale_map': 'tanh'}
    """
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--opt expects key=value, e.g. --opt n_couplings=4, got {item!r}")
        try:
            options[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key.strip()] = value
    return options


class _ParagraphFormatter(argparse.HelpFormatter):
    """Wraps each blank-line-separated paragraph of a description or epilog on its own."""

    def _fill_text(self, text, width, indent):
        return "\n\n".join(super(_ParagraphFormatter, self)._fill_text(p, width, indent)
                            for p in text.split("\n\n"))


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit code 2), without usage.

    Example:
        >>> import contextlib, io
        >>> stderr = io.StringIO()
        >>> with contextlib.redirect_stderr(stderr):
        ...     OneLineErrorParser(prog="jflows").parse_args(["--bad"])
        Traceback (most recent call last):
        ...
        SystemExit: 2
        >>> print(stderr.getvalue(), end="")
        jflows: error: unrecognized arguments: --bad (see jflows --help)
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _ParagraphFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text: str, cast, what: str, ok) -> Any:
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Argument type: an integer >= 1."""
    return _number(text, int, "a positive integer", lambda v: v >= 1)


def nonnegative_int(text: str) -> int:
    """Argument type: an integer >= 0."""
    return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def seed_int(text: str) -> int:
    """Argument type: a random seed, ``0 <= seed < 2**32`` (larger seeds would alias)."""
    return _number(text, int, "an integer from 0 to 2**32-1", lambda v: 0 <= v < 2**32)


def temperature_float(text: str) -> float:
    """Argument type: a finite number >= 0 (0 draws the mode; nan, inf, negatives refused)."""
    return _number(text, float, "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)


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


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``jflows train|eval|sample|plot|models`` (see README, "Command line")."""
    parser = OneLineErrorParser(prog="jflows", description="Normalizing flows in JAX.")
    parser.add_argument("--version", action="version", version=f"jflows {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a flow (resumes when --out holds a run)")
    train.add_argument("--model", required=True, help=f"one of {', '.join(MODELS)}")
    train.add_argument(
        "--data", required=True,
        help=f"a built-in name ({', '.join(BUILTIN_DATA)}) or the path of a .npy file",
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
        "noise from a learned conditional flow",
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
    evaluate = sub.add_parser("eval", help="NLL of a trained run on some data")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument(
        "--data", required=True,
        help="built-in data name (scores its test split, as training did) or a .npy path "
        "(scores every row of the file, also when it is the run's own training file)",
    )
    evaluate.add_argument(
        "--iw", type=positive_int, default=1, metavar="K",
        help="importance samples per example: with a stochastic layer (dequantization, "
        "augmentation) the NLL is then the negative IWBO with K samples, a tighter bound than "
        "the default one-sample ELBO (K=1); exact models ignore it",
    )
    evaluate.add_argument(
        "--lipschitz", action="store_true",
        help="also estimate the local Lipschitz constants of the data-to-latent map f and of "
        "its inverse (power iteration at up to --lipschitz-points rows; for images, of the map "
        "after dequantization): max and quantiles go to eval.json under \"lipschitz\", and "
        "2-D runs get lipschitz.png",
    )
    evaluate.add_argument(
        "--lipschitz-points", type=positive_int, default=1000, metavar="N",
        help="rows measured by --lipschitz (a seeded subsample of larger data; default 1000)",
    )
    evaluate.add_argument(
        "--labels", help="hybrid runs: .npy of integer labels of a .npy --data, one per row "
        "(default: the run's own labels file for its data, else DATA_labels.npy beside it)",
    )
    _add_eval_options(evaluate)
    sample = sub.add_parser("sample", help="draw samples from a trained run")
    sample.add_argument("--run", required=True, help="run directory")
    sample.add_argument("--n", type=positive_int, required=True, help="number of samples")
    sample.add_argument("--out", required=True, help="a .npy file, or a .png picture")
    sample.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--temperature", type=temperature_float,
        help="scale of the base's std, >= 0 (0: the mode; default: the run's)",
    )
    _add_eval_options(sample)
    models = sub.add_parser("models", help="list the models, or one model's options")
    models.add_argument(
        "name", nargs="?", help="a model name: list its --opt options, types and defaults"
    )
    plot = sub.add_parser("plot", help="draw the training curves of one or several runs")
    plot.add_argument(
        "--run", action="append", required=True,
        help="run directory (repeat to overlay several runs)",
    )
    plot.add_argument(
        "--out", help="picture to write, .png/.pdf/.svg (default RUN/curves.png for one run)"
    )
    return parser


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


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--opt", action="append", metavar="KEY=VALUE",
        help="evaluation-time model option for this command only: inverse_max_iter, "
        "inverse_atol, inverse_rtol, on_nonconvergence (the fixed-point inverse of residual "
        "flows)",
    )
