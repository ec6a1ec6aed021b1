"""The subcommands ``jflows train``, ``jflows eval`` and ``jflows sample``.

Each validates everything it can before it writes anything, and raises
:class:`jflows.errors.JflowsError` subclasses that :func:`jflows.cli.main` prints as one line.
"""

from __future__ import annotations

import contextlib
import os

import jax
import numpy as np

from jflows.cli.arguments import parse_options
from jflows.errors import ConfigError
from jflows.training import evaluate_nll, load_run, make_eval_step
from jflows.training.fit import METRICS_FILE
from jflows.training.lock import run_lock
from jflows.training.metrics import read_json, summarize_nll, write_json
from jflows.training.parallel import initialize_distributed, to_host
from jflows.training.pictures import (
    draw_samples,
    save_run_pictures,
    save_samples_picture,
    to_levels,
)
from jflows.training.runs import check_model, data_for_run, read_config
from jflows.training.setup import prepare_run, run_fit


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


def _train_settings(args) -> dict:
    """The settings a ``jflows train`` command line gives (None: the run's or the default)."""
    return {
        "model": args.model, "data": args.data, "levels": args.levels,
        "logit_alpha": args.logit_alpha, "seed": args.seed, "batch_size": args.batch_size,
        "n_bits": args.n_bits, "temperature": args.temperature, "lr": args.lr,
        "options": parse_options(args.opt) if args.opt else None, "steps": args.steps,
        "eval_every": args.eval_every, "checkpoint_every": args.checkpoint_every,
        "grad_clip": args.grad_clip, "schedule": args.schedule,
        "warmup_steps": args.warmup_steps, "weight_decay": args.weight_decay,
        "val_fraction": args.val_fraction, "patience": args.patience,
    }


def cmd_train(args) -> int:
    """``jflows train``: validates everything, locks --out, trains, draws pictures."""
    check_model(args.model)
    if args.devices is not None and args.devices < 1:
        raise ConfigError(f"--devices must be at least 1, got {args.devices}")
    _join_processes(args)
    primary = jax.process_index() == 0
    config, dataset, model, eval_model, optimizer = prepare_run(_train_settings(args), args.out)
    with run_lock(args.out) if primary else contextlib.nullcontext():
        state, _ = run_fit(
            config, dataset, model, eval_model, optimizer, args.out,
            progress=not args.quiet and primary, devices=args.devices,
        )
        if not primary:
            return 0
        state = to_host(state)  # pictures are drawn by process 0 alone, on its own device
        save_run_pictures(
            args.out, eval_model, state, dataset, key=jax.random.key(config["seed"] + 1),
            eval_batch_size=config["eval_batch_size"], temperature=config["temperature"],
        )
    print(_summary_line(read_json(os.path.join(args.out, METRICS_FILE)), args.out))
    return 0


def _summary_line(metrics: dict, out: str) -> str:
    """The last line of ``jflows train``: the figures of the best state and skipped steps."""
    line = f"step {metrics['steps']}: test NLL {metrics['test_nll']:.4f} nats"
    if "test_bits_per_dim" in metrics:
        line += f", {metrics['test_bits_per_dim']:.4f} bits/dim"
    if metrics.get("val_nll") is not None:
        line += f" (validation NLL {metrics['val_nll']:.4f}"
        line += f", best step {metrics['best_step']}"
        if metrics.get("stopped_early"):
            line += ", stopped early"
        line += ")"
    line += f"; {metrics['nonfinite_steps']} of {metrics['steps']} steps skipped as non-finite"
    return f"{line} (run in {out})"


def cmd_eval(args) -> int:
    """``jflows eval``: the NLL of a run on some data, printed and written to eval.json."""
    config = read_config(args.run)
    x = data_for_run(args.data, config, args.run)
    run = load_run(args.run, _eval_overrides(args))
    image = config["kind"] == "image"
    eval_step = make_eval_step(run.eval_model, dequantize=image)
    nll = evaluate_nll(eval_step, run.state, x, config["eval_batch_size"])
    summary = summarize_nll(nll, x[0].size, image)
    record = {**summary, "data": args.data, "n": len(x), "step": int(run.state.step)}
    write_json(os.path.join(args.run, "eval.json"), record)
    line = f"NLL {summary['nll']:.4f} nats"
    if image:
        line += f", {summary['bits_per_dim']:.4f} bits/dim"
    print(f"{line} on {len(x)} rows of {args.data}{_own_file_note(args.data, config)}")
    return 0


def _eval_overrides(args) -> dict:
    """``--opt`` of eval/sample: evaluation-time model options only (checked by load_run)."""
    return parse_options(getattr(args, "opt", None))


def _own_file_note(spec: str, config: dict) -> str:
    """Says so when ``jflows eval`` scores the run's own ``.npy`` (all of its rows)."""
    if not spec.endswith(".npy") or os.path.abspath(spec) != config.get("data"):
        return ""
    parts = [f"{config[k]} {name}" for k, name in
             (("n_train", "training"), ("n_test", "test")) if k in config]
    rows = f" ({' and '.join(parts)} rows)" if parts else ""
    return (
        f", the run's own data file: every row{rows}, not only its test split; the run's "
        f"test NLL is in metrics.json"
    )


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
    run = load_run(args.run, _eval_overrides(args))
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
