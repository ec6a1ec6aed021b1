"""The subcommands ``jflows train``, ``jflows eval`` and ``jflows sample``.

Each validates everything it can before it writes anything, and raises
:class:`jflows.errors.JflowsError` subclasses that :func:`jflows.cli.main` prints as one line.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jflows import __version__
from jflows.cli.arguments import (
    DEFAULTS,
    MODEL_DEFAULTS,
    N_TEST,
    N_TRAIN,
    SAMPLE_TEMPERATURE,
    resolve_settings,
)
from jflows.data import load_dataset, vector_stats
from jflows.errors import ConfigError
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
    config = resolve_settings(args, stored)
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
