"""Settings to a checked run config: defaults per data kind and model, and the data set.

:func:`make_run_config` turns settings (model name, options, data spec, training settings)
into the full ``config.json`` content, a :class:`~jflows.training.run_config.RunConfig`, and
the :class:`~jflows.data.Dataset`, validating everything before anything is written.
:mod:`jflows.training.setup` merges them with a run being resumed and trains
(:func:`~jflows.training.setup.train_run`, ``jflows train``).

Example:
    >>> config, dataset = make_run_config({"model": "realnvp", "data": "moons", "steps": 10})
    >>> config.steps, config.kind, dataset.event_shape
    (10, 'vector', (2,))
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jflows import __version__
from jflows.data import Dataset, load_dataset, vector_stats
from jflows.errors import ConfigError
from jflows.training.data_checks import vector_settings, warn_unused_levels
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
from jflows.training.optim import make_optimizer
from jflows.training.run_config import CONFIG_VERSION, RunConfig
from jflows.training.run_data import reduce_dataset_bits
from jflows.training.runs import check_conditional, check_options
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
    "patience", "test_fraction", "context",
)
"""The settings :func:`make_run_config` takes (None or absent: the run's or the default)."""

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
    if config["context"] is not None:
        config["context"] = os.path.abspath(os.fspath(config["context"]))
    dataset = load_dataset(
        spec, levels=config["levels"], seed=config["seed"],
        test_fraction=config["test_fraction"], context=config["context"], **sizes,
    )
    if dataset.context_shape is not None:  # a conditional run: p(x | c)
        check_conditional(config["model"], config["context"] or spec)
        config["context_shape"] = list(dataset.context_shape)
        config["context_mean"], config["context_std"] = (
            list(map(float, v)) for v in vector_stats(dataset.train_context)
        )
    config["data_levels"] = dataset.levels
    if dataset.kind == "image":
        warn_unused_levels(dataset.train, dataset.levels, spec)
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
    if kind == "image" and config.get("dequantization") is None:
        config["dequantization"] = "uniform"
    if kind == "vector" and config["logit_alpha"] is not None:
        raise ConfigError(
            f"--logit-alpha {config['logit_alpha']} only applies to image data, but "
            f"{spec!r} holds vectors; drop the option"
        )
    if kind == "vector":
        config.update(vector_settings(dataset.train, spec, config.get("dequantization")))
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
