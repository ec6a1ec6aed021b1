"""The ``jflows`` command: ``train``, ``eval`` and ``sample``.

Examples:
    jflows train --model realnvp --data 8gaussians --out runs/8g
    jflows train --model realnvp --data digits --out runs/digits --opt conv_hidden=32
    jflows eval --run runs/8g --data points.npy
    jflows sample --run runs/digits --n 64 --out digits.png

Bad input (an unknown model or data name, an invalid ``.npy`` file, a directory that is not a
run, ...) prints one line naming the problem and the fix on stderr and exits with code 2;
everything is validated before a run directory is touched.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys
from typing import Any

import jax
import numpy as np

from jflows import __version__
from jflows.data import load_dataset, vector_stats
from jflows.errors import ConfigError, JflowsError
from jflows.training import evaluate_nll, fit, load_run, make_eval_step
from jflows.training.metrics import summarize_nll, write_json
from jflows.training.parallel import initialize_distributed, to_host
from jflows.training.pictures import (
    draw_samples,
    save_run_pictures,
    save_samples_picture,
    to_levels,
)
from jflows.training.runs import (
    CONFIG_FILE,
    abstract_state,
    build_model,
    build_optimizer,
    check_model,
    check_options,
    data_for_run,
    existing_config,
    read_config,
    reduce_dataset_bits,
)

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


def _parser() -> argparse.ArgumentParser:
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


def _resolve(args, stored: dict[str, Any] | None) -> dict[str, Any]:
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


def _join_processes(args) -> None:
    given = [args.coordinator, args.num_processes, args.process_id]
    if all(v is None for v in given):
        return
    if any(v is None for v in given):
        raise ConfigError(
            "multi-process training needs all of --coordinator HOST:PORT, --num-processes N and "
            "--process-id I (the same command on every host, with its own --process-id)"
        )
    if not 0 <= args.process_id < args.num_processes:
        raise ConfigError(
            f"--process-id {args.process_id} must lie in 0 .. {args.num_processes - 1}"
        )
    initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def cmd_train(args) -> int:
    """``jflows train``: validates everything, writes config.json, trains, draws pictures."""
    check_model(args.model)
    if args.devices is not None and args.devices < 1:
        raise ConfigError(f"--devices must be at least 1, got {args.devices}")
    _join_processes(args)
    primary = jax.process_index() == 0
    stored = existing_config(args.out)
    config = _resolve(args, stored)
    check_options(config["model"], config["options"])
    sizes = {"n_train": N_TRAIN, "n_test": N_TEST}
    dataset = load_dataset(args.data, levels=config["levels"], seed=config["seed"], **sizes)
    config["data_levels"] = dataset.levels
    dataset = reduce_dataset_bits(dataset, config["n_bits"])
    kind = dataset.kind
    if config.get("temperature") is None:
        config["temperature"] = SAMPLE_TEMPERATURE.get(config["model"], 1.0)
    for key, value in {**DEFAULTS[kind], **MODEL_DEFAULTS.get((config["model"], kind), {})}.items():
        if config.get(key) is None:
            config[key] = value
    config.update(
        data_name=dataset.name, kind=kind, event_shape=list(dataset.event_shape),
        levels=dataset.levels, schedule="cosine", jflows_version=__version__, **sizes,
    )
    if kind == "vector" and config["logit_alpha"] is not None:
        raise ConfigError(
            f"--logit-alpha {config['logit_alpha']} only applies to image data, but "
            f"{args.data!r} holds vectors; drop the option"
        )
    if kind == "vector" and "mean" not in config:
        config["mean"], config["std"] = (list(v) for v in vector_stats(dataset.train))
    for key in ("steps", "batch_size", "eval_every", "checkpoint_every"):
        if config[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {config[key]}")
    model = build_model(config, training=True)
    eval_model = build_model(config, training=False)
    optimizer = build_optimizer(config)
    abstract_state(model, optimizer, config)  # a bad option fails here, before any write
    os.makedirs(args.out, exist_ok=True)
    if primary:
        write_json(os.path.join(args.out, CONFIG_FILE), config)
    state, history = fit(
        model, eval_model, dataset, steps=config["steps"], batch_size=config["batch_size"],
        seed=config["seed"], out_dir=args.out, eval_every=config["eval_every"],
        checkpoint_every=config["checkpoint_every"], eval_batch_size=config["eval_batch_size"],
        optimizer=optimizer, progress=not args.quiet and primary, model_name=config["model"],
        devices=args.devices,
    )
    if not primary:
        return 0
    state = to_host(state)  # pictures are drawn by process 0 alone, on its own device
    save_run_pictures(
        args.out, eval_model, state, dataset, key=jax.random.key(config["seed"] + 1),
        eval_batch_size=config["eval_batch_size"], temperature=config["temperature"],
    )
    last = history[-1]
    line = f"step {int(state.step)}: test NLL {last['test_nll']:.4f} nats"
    if "test_bits_per_dim" in last:
        line += f", {last['test_bits_per_dim']:.4f} bits/dim"
    print(f"{line} (run in {args.out})")
    return 0


def cmd_eval(args) -> int:
    """``jflows eval``: the NLL of a run on some data, printed and written to eval.json."""
    config = read_config(args.run)
    x = data_for_run(args.data, config, args.run)
    run = load_run(args.run)
    image = config["kind"] == "image"
    eval_step = make_eval_step(run.eval_model, dequantize=image)
    nll = evaluate_nll(eval_step, run.state, x, config["eval_batch_size"])
    summary = summarize_nll(nll, x[0].size, image)
    record = {**summary, "data": args.data, "n": len(x), "step": int(run.state.step)}
    write_json(os.path.join(args.run, "eval.json"), record)
    line = f"NLL {summary['nll']:.4f} nats"
    if image:
        line += f", {summary['bits_per_dim']:.4f} bits/dim"
    print(f"{line} on {len(x)} rows of {args.data}")
    return 0


def cmd_sample(args) -> int:
    """``jflows sample``: ``--n`` samples to a ``.npy`` (data units) or a ``.png`` picture."""
    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    if not args.out.endswith((".npy", ".png")):
        raise ConfigError(f"--out must end in .npy or .png, got {args.out!r}")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise ConfigError(f"the directory of --out {args.out!r} does not exist; create it first")
    config = read_config(args.run)
    run = load_run(args.run)
    temperature = args.temperature
    if temperature is None:
        temperature = config.get("temperature", 1.0)
    samples = draw_samples(
        run.eval_model, run.state, args.n, jax.random.key(args.seed), temperature=temperature
    )
    levels = config["levels"] if config["kind"] == "image" else None
    if args.out.endswith(".png"):
        save_samples_picture(args.out, samples, levels)
    else:
        np.save(args.out, to_levels(samples, levels) if levels else samples.astype(np.float32))
    print(f"wrote {args.n} samples to {args.out}")
    return 0


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at the time of each message."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _log_to_stderr() -> None:
    """Sends jflows' INFO messages (resumption, evaluations) to stderr, once per process."""
    logger = logging.getLogger("jflows")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("jflows: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jflows`` console script; returns the exit code."""
    _log_to_stderr()
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the usage and the message
        return int(exit_.code or 0)
    try:
        return COMMANDS[args.command](args)
    except JflowsError as err:
        print(f"jflows {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jflows: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
