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

DEFAULTS = {
    "vector": dict(
        steps=5000, batch_size=500, lr=2e-3, eval_every=1000, checkpoint_every=1000,
        eval_batch_size=1000,
    ),
    "image": dict(
        steps=2000, batch_size=64, lr=1e-3, eval_every=500, checkpoint_every=500,
        eval_batch_size=256,
    ),
}
"""Training defaults per data kind, sized to finish in a few minutes on a 2-core CPU."""

MODEL_DEFAULTS = {
    ("glow", "image"): dict(steps=1000, lr=2e-3),
}
"""Overrides of :data:`DEFAULTS` per (model, kind). Glow on digits trains markedly better in its
1000 steps at lr 2e-3 than at 1e-3 (compare ``jflows train --model glow --data digits --out A``
with the same command plus ``--lr 1e-3``)."""

SAMPLE_TEMPERATURE = {"glow": 0.7}
"""Temperature of the pictures a run draws, per model (Glow's samples look best at 0.7)."""

N_TRAIN, N_TEST = 100_000, 5_000
"""Sizes of the training pool and test set drawn from a toy density."""

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
    evaluate = sub.add_parser("eval", help="NLL of a trained run on some data")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument("--data", required=True, help="built-in data name or a .npy path")
    sample = sub.add_parser("sample", help="draw samples from a trained run")
    sample.add_argument("--run", required=True, help="run directory")
    sample.add_argument("--n", type=int, required=True, help="number of samples")
    sample.add_argument("--out", required=True, help="a .npy file, or a .png picture")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--temperature", type=float, help="scale of the base's std (default: the run's)"
    )
    return parser


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
