"""A run from a model name and a data spec: the one code path of ``jflows train`` and Python.

:func:`make_run_config` turns settings (model name, options, data spec, training settings)
into the full ``config.json`` content and the :class:`~jflows.data.Dataset`, validating
everything before anything is written. :func:`train_run` then trains it with
:func:`~jflows.training.fit`, which writes ``config.json`` into the run directory, so a run
made from Python can be evaluated, sampled and resumed by the command line (see the example
of :func:`train_run`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import numpy as np

from jflows import __version__
from jflows.data import Dataset, load_dataset, vector_stats
from jflows.errors import ConfigError
from jflows.training.defaults import (
    DEFAULTS,
    MODEL_DEFAULTS,
    N_TEST,
    N_TRAIN,
    OPTIMIZER_DEFAULTS,
    SAMPLE_TEMPERATURE,
    SMALL_TEST_FRACTION,
    SMALL_VECTOR_DEFAULTS,
    TEST_FRACTION,
)
from jflows.training.fit import fit
from jflows.training.optim import make_optimizer
from jflows.training.run_config import CONFIG_VERSION, RunConfig
from jflows.training.run_data import reduce_dataset_bits
from jflows.training.runs import (
    EVAL_OPTIONS,
    abstract_state,
    build_model,
    build_optimizer,
    check_options,
    existing_config,
)
from jflows.training.state import TrainState
from jflows.training.validation import (
    SMALL_DATA_ROWS,
    check_patience,
    check_val_fraction,
    default_val_fraction,
)

SETTINGS = (
    "model", "data", "options", "levels", "n_bits", "logit_alpha", "dequantization", "seed",
    "batch_size", "lr", "steps", "eval_every", "checkpoint_every", "eval_batch_size",
    "temperature", "schedule", "warmup_steps", "grad_clip", "weight_decay", "val_fraction",
    "patience", "test_fraction",
)
"""The settings :func:`make_run_config` takes (None or absent: the run's or the default)."""

IDENTITY = (
    "model", "data", "options", "levels", "n_bits", "logit_alpha", "dequantization", "seed",
    "batch_size", "lr", "schedule", "warmup_steps", "grad_clip", "weight_decay", "val_fraction",
    "test_fraction",
)
"""Settings a resumed run must share with the run in its directory."""


LEGACY = dict(
    test_fraction=0.1, val_fraction=0.0, patience=0, weight_decay=0.0, warmup_steps=0,
    schedule="cosine",
)
"""What a run whose ``config.json`` predates a setting used, so that resuming it keeps its
split and optimizer (the new small-data defaults apply to new runs only)."""


def _as_json(value):
    """``value`` as it reads back from config.json (tuples become lists)."""
    return json.loads(json.dumps(value))


def data_id(spec: str | os.PathLike) -> str:
    """How a run records its data: a built-in name, or the absolute path of a ``.npy``."""
    spec = os.fspath(spec)
    return os.path.abspath(spec) if spec.endswith(".npy") else spec


def _rows_of(spec: str) -> int | None:
    try:
        return int(np.load(spec, mmap_mode="r", allow_pickle=False).shape[0])
    except Exception:  # noqa: BLE001 - load_dataset reports a bad file properly
        return None


def _check_lr(lr) -> None:
    make_optimizer(lr)  # raises ConfigError for non-finite or non-positive rates


def make_run_config(settings: dict[str, Any]) -> tuple[RunConfig, Dataset]:
    """The full run config and the data set of ``settings``; nothing is written.

    Unset settings (None) take the defaults of :mod:`jflows.training.defaults`: per data kind,
    per model, and for small vector data (fewer than 10 000 training rows) the small-data
    defaults (a validation split, frequent evaluations, early stopping, weight decay).

    Args:
        settings: keys of :data:`SETTINGS`; ``model`` and ``data`` are required.

    Returns:
        ``(config, dataset)``, the config a checked :class:`RunConfig`.

    Raises:
        JflowsError: an unknown model or option, unreadable data, an invalid setting.
    """
    config = {k: settings.get(k) for k in SETTINGS}
    config["options"] = dict(config["options"] or {})
    config["seed"] = 0 if config["seed"] is None else config["seed"]
    if isinstance(config["seed"], bool) or not isinstance(config["seed"], int) or (
        config["seed"] < 0
    ):
        raise ConfigError(f"the seed must be an integer >= 0, got {config['seed']!r}")
    config["options"] = check_options(config["model"], config["options"])
    spec = os.fspath(config["data"])
    config["data"] = data_id(spec)
    if config["test_fraction"] is None:
        rows = _rows_of(spec) if spec.endswith(".npy") else None
        small = rows is not None and rows < SMALL_DATA_ROWS
        config["test_fraction"] = SMALL_TEST_FRACTION if small else TEST_FRACTION
    sizes = {"n_train": N_TRAIN, "n_test": N_TEST}
    dataset = load_dataset(
        spec, levels=config["levels"], seed=config["seed"],
        test_fraction=config["test_fraction"], **sizes,
    )
    config["data_levels"] = dataset.levels
    dataset = reduce_dataset_bits(dataset, config["n_bits"])
    kind = dataset.kind
    if config["temperature"] is None:
        config["temperature"] = SAMPLE_TEMPERATURE.get(config["model"], 1.0)
    defaults = {**DEFAULTS[kind], **OPTIMIZER_DEFAULTS}
    defaults.update(MODEL_DEFAULTS.get((config["model"], kind), {}))
    if kind == "vector" and len(dataset.train) < SMALL_DATA_ROWS:
        defaults.update(SMALL_VECTOR_DEFAULTS)
    for key, value in defaults.items():
        if config.get(key) is None:
            config[key] = value
    config.update(
        data_name=dataset.name, kind=kind, event_shape=list(dataset.event_shape),
        levels=dataset.levels, jflows_version=__version__, version=CONFIG_VERSION, **sizes,
    )
    if kind == "vector" and config.get("dequantization") is not None:
        raise ConfigError(
            f"--dequantization {config['dequantization']} only applies to image data, but "
            f"{spec!r} holds vectors; drop the option"
        )
    if kind == "image" and config.get("dequantization") is None:
        config["dequantization"] = "uniform"
    if kind == "vector" and config["logit_alpha"] is not None:
        raise ConfigError(
            f"--logit-alpha {config['logit_alpha']} only applies to image data, but "
            f"{spec!r} holds vectors; drop the option"
        )
    if kind == "vector":
        config["mean"], config["std"] = (list(map(float, v)) for v in vector_stats(dataset.train))
    for key in ("steps", "batch_size", "eval_every", "checkpoint_every", "eval_batch_size"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {value!r}")
    _check_lr(config["lr"])
    if config["val_fraction"] is None:  # as fit's default: on below 10 000 training rows
        config["val_fraction"] = default_val_fraction(len(dataset.train))
    check_val_fraction(config["val_fraction"])
    if config["patience"] is None:
        config["patience"] = 10 if config["val_fraction"] > 0 else 0
    check_patience(config["patience"])
    return RunConfig.from_dict(config), dataset


def check_resume(config: RunConfig, stored: RunConfig, out_dir) -> None:
    """Raises ConfigError when ``config`` and ``stored`` differ in an :data:`IDENTITY` setting.

    ``stored`` is the config of the run in ``out_dir``; only keys it records count, and the
    evaluation-time options (:data:`~jflows.training.runs.EVAL_OPTIONS`, e.g. the fixed-point
    inverse's cap) may change on resumption.
    """

    def same(key):
        a, b = _as_json(config.get(key)), _as_json(stored.get(key))
        if key == "options":
            a = {k: v for k, v in (a or {}).items() if k not in EVAL_OPTIONS}
            b = {k: v for k, v in (b or {}).items() if k not in EVAL_OPTIONS}
        if key == "dequantization":  # runs before the setting dequantized uniformly
            a, b = a or "uniform", b or "uniform"
        return a == b

    if stored.get("n_classes") is not None:
        raise ConfigError(
            f"{os.fspath(out_dir)!r} holds a hybrid run (jflows train --hybrid-lambda), which "
            f"does not resume; pass a new --out directory"
        )
    clash = [k for k in IDENTITY if k in stored and not same(k)]
    if clash:
        was = ", ".join(f"{k}={stored.get(k)!r}" for k in clash)
        now = ", ".join(f"{k}={config.get(k)!r}" for k in clash)
        raise ConfigError(
            f"{os.fspath(out_dir)!r} holds a run with {was}, but this command asks for {now}; "
            f"rerun with the run's settings to resume it, or pass a new --out directory"
        )


@dataclasses.dataclass
class TrainedRun:
    """What :func:`train_run` returns."""

    config: RunConfig
    dataset: Dataset
    model: nn.Module
    eval_model: nn.Module
    state: TrainState
    history: list[dict[str, Any]]


def prepare_run(
    settings: dict[str, Any], out_dir: str | os.PathLike
) -> tuple[dict[str, Any], Dataset, nn.Module, nn.Module, Any]:
    """Settings (merged with the run in ``out_dir``, if any) to a checked config and models.

    Returns:
        ``(config, dataset, model, eval_model, optimizer)``; nothing has been written.
    """
    stored = existing_config(out_dir)
    if stored is not None:
        given = {k: v for k, v in settings.items() if v is not None}
        if "data" in given:
            given["data"] = data_id(given["data"])
        merged = {k: stored.get(k) for k in SETTINGS}
        for key, value in LEGACY.items():  # a run written before these settings existed
            if key not in stored:
                merged[key] = value
        merged.update(given)
        merged["data"] = stored["data"] if "data" not in given else given["data"]
        settings = merged
    config, dataset = make_run_config(settings)
    if stored is not None:
        check_resume(config, stored, out_dir)
    model = build_model(config, training=True)
    eval_model = build_model(config, training=False)
    optimizer = build_optimizer(config)
    abstract_state(model, optimizer, config)  # a bad option fails here, before any write
    return config, dataset, model, eval_model, optimizer


def train_run(
    model: str,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    devices: int | None = None,
    **settings: Any,
) -> TrainedRun:
    """Trains (or resumes) the run in ``out_dir`` exactly as ``jflows train`` would.

    Args:
        model: a model name (``jflows.models.MODELS``).
        data: a built-in data name or a ``.npy`` path.
        out_dir: the run directory (created; resumed when it holds a run).
        options: model options (the CLI's ``--opt``).
        progress: show a progress bar.
        devices: data-parallel over this many devices.
        **settings: any other key of :data:`SETTINGS` (``steps``, ``lr``, ``seed``, ...).

    Returns:
        A :class:`TrainedRun` (``state`` is the best state).

    Example:
        A tiny run (the defaults train 5000 steps of a larger model):

        >>> run = train_run("realnvp", "moons", "runs/new", steps=4, eval_every=2,
        ...                 batch_size=64, options={"n_couplings": 2, "hidden": (8,)})
        >>> [record["step"] for record in run.history]
        [2, 4]
        >>> sorted({"config.json", "checkpoints", "evals.jsonl"} & set(os.listdir("runs/new")))
        ['checkpoints', 'config.json', 'evals.jsonl']

        Then ``jflows eval --run runs/new --data moons`` evaluates it and ``jflows train
        --model realnvp --data moons --out runs/new --steps 10`` resumes it.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(
            f"train_run got unknown settings {unknown}; valid ones are {', '.join(SETTINGS)}"
        )
    settings = {**settings, "model": model, "data": data, "options": options}
    config, dataset, flow, eval_flow, optimizer = prepare_run(settings, out_dir)
    state, history = run_fit(config, dataset, flow, eval_flow, optimizer, out_dir,
                             progress=progress, devices=devices)
    return TrainedRun(config, dataset, flow, eval_flow, state, history)


def run_fit(config, dataset, model, eval_model, optimizer, out_dir, *, progress, devices):
    """:func:`fit` with the settings of ``config`` (which it writes to ``config.json``)."""
    return fit(
        model, eval_model, dataset, steps=config["steps"], batch_size=config["batch_size"],
        seed=config["seed"], out_dir=out_dir, eval_every=config["eval_every"],
        checkpoint_every=config["checkpoint_every"], eval_batch_size=config["eval_batch_size"],
        optimizer=optimizer, progress=progress, model_name=config["model"], devices=devices,
        val_fraction=config["val_fraction"], patience=config["patience"], config=config,
    )
