"""Arguments of the ``jflows`` command: defaults, ``--opt`` parsing, the parser, settings.

A run's settings come from the flags given, else (resuming) the run's ``config.json``, else the
defaults below; a resumed run must agree with its directory on every :data:`IDENTITY` setting.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
from typing import Any

from jflows.errors import ConfigError
from jflows.training.defaults import (  # noqa: F401 - the CLI's defaults live in training
    DEFAULTS,
    MODEL_DEFAULTS,
    N_TEST,
    N_TRAIN,
    SAMPLE_TEMPERATURE,
)

IDENTITY = (
    "model", "data", "options", "levels", "n_bits", "logit_alpha", "seed", "batch_size", "lr",
)
"""Settings a resumed run must share with the run in its directory."""


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` to a dict; values go through ``ast.literal_eval`` (else strings).

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


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``jflows train|eval|sample`` (see README, "Command line")."""
    parser = argparse.ArgumentParser(prog="jflows", description="Normalizing flows in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a flow (resumes when --out holds a run)")
    train.add_argument("--model", required=True, help="model name, e.g. realnvp or nice")
    train.add_argument("--data", required=True, help="built-in data name or a .npy path")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--steps", type=int, help="training steps (default per data kind)")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="peak learning rate (cosine decay)")
    train.add_argument("--levels", type=int, help="grey levels of uint8 image data")
    train.add_argument(
        "--n-bits", type=int, help="reduce images to 2**n_bits levels (Glow's 5-bit setting)"
    )
    train.add_argument(
        "--temperature", type=float, help="temperature of the pictures (default 0.7 for glow)"
    )
    train.add_argument("--eval-every", type=int)
    train.add_argument("--checkpoint-every", type=int)
    train.add_argument("--logit-alpha", type=float, help="logit pre-processing of images")
    train.add_argument("--opt", action="append", metavar="KEY=VALUE", help="model option")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--devices", type=int, help="data-parallel over this many local devices (default 1)"
    )
    train.add_argument(
        "--coordinator", help="host:port of process 0, to train on several hosts (see README)"
    )
    train.add_argument("--num-processes", type=int, help="number of processes (hosts)")
    train.add_argument("--process-id", type=int, help="this process's index, 0 .. n-1")
    _add_optimizer_arguments(train)
    evaluate = sub.add_parser("eval", help="NLL of a trained run on some data")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument(
        "--data", required=True,
        help="built-in data name (scores its test split, as training did) or a .npy path "
        "(scores every row of the file, also when it is the run's own training file)",
    )
    _add_eval_options(evaluate)
    sample = sub.add_parser("sample", help="draw samples from a trained run")
    sample.add_argument("--run", required=True, help="run directory")
    sample.add_argument("--n", type=int, required=True, help="number of samples")
    sample.add_argument("--out", required=True, help="a .npy file, or a .png picture")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--temperature", type=float, help="scale of the base's std (default: the run's)"
    )
    _add_eval_options(sample)
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
    train.add_argument(
        "--weight-decay", type=float,
        help="AdamW's decoupled weight decay (default 1e-4 for vector data with fewer than "
        "10000 training rows, else 0: plain Adam)",
    )
    train.add_argument(
        "--val-fraction", type=float,
        help="fraction of the training rows held out for validation, best-state selection "
        "and early stopping (default 0.1 below 10000 training rows, else 0)",
    )
    train.add_argument(
        "--patience", type=int,
        help="evaluations without a better validation NLL before stopping (default 10 with a "
        "validation split; 0 never stops early)",
    )


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--opt", action="append", metavar="KEY=VALUE",
        help="evaluation-time model option for this command only: inverse_max_iter, "
        "inverse_atol, inverse_rtol, on_nonconvergence (the fixed-point inverse of residual "
        "flows)",
    )


def _data_id(spec: str) -> str:
    return os.path.abspath(spec) if spec.endswith(".npy") else spec


def _as_json(value):
    """``value`` as it reads back from config.json (tuples become lists)."""
    return json.loads(json.dumps(value))


def resolve_settings(args: argparse.Namespace, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The requested settings; unset flags come from ``stored`` (resuming) or defaults."""
    given = {
        "model": args.model, "data": _data_id(args.data), "levels": args.levels,
        "logit_alpha": args.logit_alpha, "seed": args.seed, "batch_size": args.batch_size,
        "n_bits": args.n_bits, "temperature": args.temperature,
        "lr": args.lr, "options": parse_options(args.opt) if args.opt else None,
        "steps": args.steps, "eval_every": args.eval_every,
        "checkpoint_every": args.checkpoint_every,
    }
    if stored is not None:
        clash = [
            k for k in IDENTITY if given[k] is not None and _as_json(given[k]) != stored.get(k)
        ]
        if clash:
            was = ", ".join(f"{k}={stored.get(k)!r}" for k in clash)
            now = ", ".join(f"{k}={given[k]!r}" for k in clash)
            raise ConfigError(
                f"{args.out!r} holds a run with {was}, but this command asks for {now}; rerun "
                f"with the run's settings to resume it, or pass a new --out directory"
            )
        return _as_json({**stored, **{k: v for k, v in given.items() if v is not None}})
    return _as_json({**given, "seed": args.seed or 0, "options": given["options"] or {}})
