"""A run from a model name and a data spec: the one code path of ``jflows train`` and Python.

:func:`~jflows.training.run_settings.make_run_config` (in :mod:`jflows.training.run_settings`,
importable from here too) turns settings (model name, options, data spec, training settings)
into the full ``config.json`` content and the :class:`~jflows.data.Dataset`, validating
everything before anything is written. :func:`prepare_run` merges the settings with a run
being resumed (:func:`check_resume`) and builds the models and the optimizer;
:func:`train_run` then trains it with
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

from jflows.data import Dataset
from jflows.errors import ConfigError
from jflows.training.fit import fit
from jflows.training.run_config import RunConfig
from jflows.training.run_settings import (  # noqa: F401 - public here too (README, tests)
    SETTINGS,
    data_id,
    make_run_config,
)
from jflows.training.runs import (
    EVAL_OPTIONS,
    abstract_state,
    build_model,
    build_optimizer,
    existing_config,
)
from jflows.training.state import TrainState

IDENTITY = (
    "model", "data", "options", "levels", "n_bits", "logit_alpha", "dequantization", "seed",
    "batch_size", "lr", "schedule", "warmup_steps", "grad_clip", "weight_decay", "val_fraction",
    "test_fraction", "context",
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
        if key == "dequantization" and stored.get("kind") == "image":
            # image runs before the setting dequantized uniformly
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
        if "context" in given:
            given["context"] = os.path.abspath(os.fspath(given["context"]))
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


def run_fit(config, dataset, model, eval_model, optimizer, out_dir, *, progress, devices,
            compile_cache=True):
    """:func:`fit` with the settings of ``config`` (which it writes to ``config.json``).

    ``compile_cache`` is :func:`fit`'s (the command line passes its ``--compile-cache`` and
    ``--no-compile-cache`` choice).
    """
    return fit(
        model, eval_model, dataset, steps=config["steps"], batch_size=config["batch_size"],
        seed=config["seed"], out_dir=out_dir, eval_every=config["eval_every"],
        checkpoint_every=config["checkpoint_every"], eval_batch_size=config["eval_batch_size"],
        optimizer=optimizer, progress=progress, model_name=config["model"], devices=devices,
        val_fraction=config["val_fraction"], patience=config["patience"], config=config,
        compile_cache=compile_cache,
    )
