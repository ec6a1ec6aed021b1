"""Arguments of the ``jflows`` command: ``--opt`` parsing and the parser.

The flags of ``jflows train`` live in :mod:`jflows.cli.train_arguments` and the checked
number types in :mod:`jflows.cli.argument_types` (both importable from here too); this module
holds the parser itself and the flags of ``eval``, ``sample``, ``models`` and ``plot``.

A run's settings come from the flags given, else (resuming) the run's ``config.json``, else the
defaults of :mod:`jflows.training.defaults`; :func:`jflows.training.setup.prepare_run` merges
them, and a resumed run must agree with its directory on every
:data:`jflows.training.setup.IDENTITY` setting.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

from jflows import __version__
from jflows.cli.argument_types import (  # noqa: F401 - importable from here too
    nonnegative_int,
    positive_int,
    seed_int,
    temperature_float,
)
from jflows.cli.train_arguments import (  # noqa: F401
    EXIT_CODES,
    add_runtime_arguments,
    add_train_parser,
)
from jflows.errors import ConfigError
from jflows.training.defaults import (  # noqa: F401 - the CLI's defaults live in training
    DEFAULTS,
    MODEL_DEFAULTS,
    N_TEST,
    N_TRAIN,
    SAMPLE_TEMPERATURE,
)
from jflows.training.runs import EVAL_OPTIONS


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


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``jflows train|eval|sample|plot|models`` (see README, "Command line")."""
    parser = OneLineErrorParser(prog="jflows", description="Normalizing flows in JAX.")
    parser.add_argument("--version", action="version", version=f"jflows {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    evaluate = sub.add_parser("eval", help="NLL of a trained run on some data")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument(
        "--data", required=True,
        help="built-in data name (scores its test split, as training did) or a .npy path "
        "(scores every row of the file, also when it is the run's own training file)",
    )
    evaluate.add_argument(
        "--context", metavar="C.npy",
        help="conditional runs: .npy of one context row per row of a .npy --data (a "
        "conditional built-in brings its test split's own)",
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
    add_runtime_arguments(evaluate)
    sample = sub.add_parser("sample", help="draw samples from a trained run")
    sample.add_argument("--run", required=True, help="run directory")
    sample.add_argument(
        "--n", type=positive_int,
        help="number of samples (required unless --context gives one row per sample)",
    )
    sample.add_argument(
        "--context", metavar="C.npy",
        help="conditional runs: .npy of contexts, one row per sample, or a single row "
        "repeated --n times",
    )
    sample.add_argument("--out", required=True, help="a .npy file, or a .png picture")
    sample.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--temperature", type=temperature_float,
        help="scale of the base's std, >= 0 (0: the mode; default: the run's)",
    )
    _add_eval_options(sample)
    add_runtime_arguments(sample)
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


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--opt", action="append", metavar="KEY=VALUE",
        help="evaluation-time model option for this command only: "
        f"{', '.join(sorted(EVAL_OPTIONS))} (the fixed-point inverses of residual flows and "
        "MintNet)",
    )
