"""The subcommands ``jflows train``, ``eval``, ``sample``, ``plot`` and ``models``.

Each validates everything it can before it writes anything, and raises
:class:`jflows.errors.JflowsError` subclasses that :func:`jflows.cli.main` prints as one line.
"""

from __future__ import annotations

import contextlib
import logging
import os

import jax
import numpy as np

from jflows.bijectors import Kind
from jflows.cli.arguments import parse_options
from jflows.cli.hybrid_commands import hybrid_accuracy, refuse_hybrid_plot, train_hybrid
from jflows.errors import ConfigError, DataError, JflowsError, TrainingDivergedError
from jflows.models.hybrid import flow_part
from jflows.training import evaluate_nll, load_run, make_eval_step
from jflows.training.curves import (
    CURVES_FILE,
    PLOT_FORMATS,
    read_run_curves,
    save_training_curves,
)
from jflows.training.figures import (
    describe,
    estimate_of,
    labelled,
    likelihood_name,
    read_figure,
)
from jflows.training.fit import METRICS_FILE
from jflows.training.hybrid_run import is_hybrid
from jflows.training.lipschitz_eval import run_lipschitz
from jflows.training.lock import run_lock
from jflows.training.metrics import read_json, summarize_nll, write_json
from jflows.training.options import describe_models, describe_options
from jflows.training.parallel import initialize_distributed, to_host
from jflows.training.pictures import (
    draw_samples,
    run_caption,
    save_run_pictures,
    save_samples_picture,
    to_levels,
)
from jflows.training.run_data import context_for_run, data_for_run
from jflows.training.runs import check_model, read_config
from jflows.training.sample_context import sample_count_and_context
from jflows.training.setup import prepare_run, run_fit

logger = logging.getLogger(__name__)


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
        "logit_alpha": args.logit_alpha, "dequantization": args.dequantization,
        "seed": args.seed, "batch_size": args.batch_size,
        "n_bits": args.n_bits, "temperature": args.temperature, "lr": args.lr,
        "options": parse_options(args.opt) if args.opt else None, "steps": args.steps,
        "eval_every": args.eval_every, "checkpoint_every": args.checkpoint_every,
        "grad_clip": args.grad_clip, "schedule": args.schedule,
        "warmup_steps": args.warmup_steps, "weight_decay": args.weight_decay,
        "val_fraction": args.val_fraction, "patience": args.patience,
        "context": getattr(args, "context", None),
    }


def cmd_train(args) -> int:
    """``jflows train``: validates everything, locks --out, trains, draws pictures."""
    check_model(args.model)
    if args.devices is not None and args.devices < 1:
        raise ConfigError(f"--devices must be at least 1, got {args.devices}")
    if getattr(args, "hybrid_lambda", None) is not None:
        if getattr(args, "context", None) is not None:
            raise ConfigError("--hybrid-lambda trains an unconditional hybrid model; drop "
                              "--context (or --hybrid-lambda to train p(x | c))")
        return train_hybrid(args, _train_settings(args))
    _join_processes(args)
    primary = jax.process_index() == 0
    config, dataset, model, eval_model, optimizer = prepare_run(_train_settings(args), args.out)
    with run_lock(args.out) if primary else contextlib.nullcontext():
        try:
            state, _ = run_fit(
                config, dataset, model, eval_model, optimizer, args.out,
                progress=not args.quiet and primary, devices=args.devices,
                compile_cache=False if args.no_compile_cache else args.compile_cache or True,
            )
        except TrainingDivergedError:
            if primary:  # the curves show where it went wrong
                _draw_curves(args.out)
            raise
        if not primary:
            return 0
        state = to_host(state)  # pictures are drawn by process 0 alone, on its own device
        metrics = read_json(os.path.join(args.out, METRICS_FILE))
        save_run_pictures(
            args.out, eval_model, state, dataset, key=jax.random.key(config["seed"] + 1),
            eval_batch_size=config["eval_batch_size"], temperature=config["temperature"],
            model_name=config["model"], step=int(state.step), record=metrics,
        )
        _draw_curves(args.out)
    print(_summary_line(metrics, args.out))
    return 0


def _draw_curves(out: str) -> None:
    """``out/curves.png``; a run without evaluations yet gets none (with a warning)."""
    try:
        save_training_curves(out, os.path.join(out, CURVES_FILE))
    except (JflowsError, OSError, ValueError) as err:
        logger.warning("curves.png of %s skipped: %s", out, err)


def _summary_line(metrics: dict, out: str) -> str:
    """The last line of ``jflows train``: the figures of the best state and skipped steps."""
    nll = read_figure(metrics, "test", "nll")
    line = f"step {metrics['steps']}: {describe('test', 'nll', metrics)} "
    line += "nan" if nll is None else f"{nll:.4f} nats"
    bpd = read_figure(metrics, "test", "bits_per_dim")
    if bpd is not None:
        line += f", {bpd:.4f} bits/dim"
    val = read_figure(metrics, "val", "nll")
    if val is not None:
        line += f" ({describe('val', 'nll', metrics)} {val:.4f}"
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
    context = context_for_run(args.data, getattr(args, "context", None), config, args.run,
                              len(x))
    if context is not None and getattr(args, "lipschitz", False):
        raise ConfigError("--lipschitz measures unconditional maps; drop it for a conditional "
                          "run")
    run = load_run(args.run, _eval_overrides(args))
    image = config["kind"] == "image"
    samples = args.iw if run.eval_model.kind == Kind.STOCHASTIC else 1
    if samples != args.iw:
        print(f"--iw {args.iw}: this model has no stochastic layer, so its NLL is "
              f"{likelihood_name(estimate_of(run.eval_model))} without importance sampling")
    eval_step = make_eval_step(run.eval_model, samples=samples)
    batch_size = max(1, config["eval_batch_size"] // samples)  # K copies per row in memory
    nll = evaluate_nll(eval_step, run.state, x if context is None else (x, context), batch_size)
    estimate = estimate_of(run.eval_model)
    record = {
        **labelled(summarize_nll(nll, x[0].size, image), None, estimate),
        "likelihood": likelihood_name(estimate),
        "iw_samples": samples,
        "data": args.data,
        "n": len(x),
        "step": int(run.state.step),
    }
    hybrid_line = hybrid_accuracy(args, run, x, record) if is_hybrid(config) else ""
    lipschitz_line = None
    if getattr(args, "lipschitz", False):
        flow, variables = flow_part(run.eval_model, run.state.variables())
        record["lipschitz"], lipschitz_line = run_lipschitz(
            args.run, flow, variables, x, points=args.lipschitz_points,
            title=run_caption(config["model"], int(run.state.step)),
        )
    write_json(os.path.join(args.run, "eval.json"), record)
    what = describe(None, "nll", record)
    if samples > 1:
        what = f"{what[:-1]}, IWBO K={samples})"
    line = f"{what} {read_figure(record, None, 'nll'):.4f} nats"
    if image:
        line += f", {read_figure(record, None, 'bits_per_dim'):.4f} bits/dim"
    print(f"{line}{hybrid_line} on {len(x)} rows of {args.data}"
          f"{_own_file_note(args.data, config)}")
    if lipschitz_line:
        print(f"Lipschitz estimates: {lipschitz_line}")
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
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    if not args.out.endswith((".npy", ".png")):
        raise ConfigError(f"--out must end in .npy or .png, got {args.out!r}")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise ConfigError(f"the directory of --out {args.out!r} does not exist; create it first")
    config = read_config(args.run)
    n, context = sample_count_and_context(config, args.run, args.n, getattr(args, "context", None))
    run = load_run(args.run, _eval_overrides(args))
    temperature = args.temperature
    if temperature is None:
        temperature = config.get("temperature", 1.0)
    samples = draw_samples(
        run.eval_model, run.state, n, jax.random.key(args.seed), temperature=temperature,
        context=context,
    )
    bad = int((~np.isfinite(samples.reshape(len(samples), -1)).all(axis=1)).sum())
    if bad:
        raise DataError(
            f"{bad} of {len(samples)} samples of run {args.run!r} are not finite (its "
            f"parameters are degenerate: see metrics.json and curves.png); nothing was written, "
            f"train a new run with a lower --lr"
        )
    levels = config["levels"] if config["kind"] == "image" else None
    if args.out.endswith(".png"):
        title = run_caption(config["model"], int(run.state.step), None, temperature)
        save_samples_picture(args.out, samples, levels, title)
    else:
        np.save(args.out, to_levels(samples, levels) if levels else samples.astype(np.float32))
    given = "" if context is None else f" given the contexts of {args.context}"
    print(f"wrote {n} samples{given} to {args.out}")
    return 0


def cmd_models(args) -> int:
    """``jflows models [NAME]``: one line per model, or NAME's options (type, default, help)."""
    lines = describe_models() if args.name is None else describe_options(args.name)
    print("\n".join(lines))
    return 0


def cmd_plot(args) -> int:
    """``jflows plot``: the training curves of one or several runs to one picture.

    One run: ``--out`` defaults to ``RUN/curves.png``. Several runs are overlaid, one colour
    each, and need ``--out``.
    """
    if args.out is None and len(args.run) > 1:
        raise ConfigError(
            f"{len(args.run)} runs are drawn into one picture: pass --out FILE.png (the default "
            f"RUN/curves.png is for one run)"
        )
    out = args.out or os.path.join(args.run[0], CURVES_FILE)
    if not out.endswith(PLOT_FORMATS):
        raise ConfigError(f"--out must end in {', '.join(PLOT_FORMATS)}, got {out!r}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConfigError(f"the directory of --out {out!r} does not exist; create it first")
    for run in args.run:  # every run is checked before anything is drawn
        refuse_hybrid_plot(run)
        read_run_curves(run)
    save_training_curves(args.run, out)
    n = len(args.run)
    print(f"wrote the training curves of {n} run{'s' if n > 1 else ''} to {out}")
    return 0
