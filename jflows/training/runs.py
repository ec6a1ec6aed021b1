"""Run directories: the ``config.json`` that rebuilds a model, and loading a trained run.

A run directory written by ``jflows train`` holds ``config.json`` (model name and options,
data spec, event shape, pre-processing numbers, training settings), ``checkpoints/``,
``evals.jsonl``, ``metrics.json`` and pictures. :func:`build_model` turns a config back into the
model with its own pre-processing, so the density of a reloaded run still refers to raw data.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows import __version__
from jflows.errors import CheckpointError, ConfigError
from jflows.models import MODELS, Flow, hybrid, image_preprocessing, vector_preprocessing
from jflows.training.checkpoints import CHECKPOINT_DIR, Checkpointer
from jflows.training.conditional_models import check_conditional, conditional_models  # noqa: F401
from jflows.training.data_checks import lattice_layers
from jflows.training.lock import LOCK_FILE
from jflows.training.metrics import read_json
from jflows.training.optim import make_optimizer
from jflows.training.options import RESERVED_OPTIONS, check_model, coerce_options  # noqa: F401
from jflows.training.run_config import CONFIG_VERSION, RunConfig
from jflows.training.state import TrainState, create_train_state

CONFIG_FILE = "config.json"


def check_options(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the factory of ``model`` and converted to its types.

    Raises:
        ConfigError: an unknown model or option, or a value of the wrong type or choice (see
            :func:`jflows.training.options.coerce_options`).

    Example:
        >>> check_options("realnvp", {"n_couplings": 4, "hidden": [32, 32]})
        {'n_couplings': 4, 'hidden': (32, 32)}
    """
    return coerce_options(model, options)


def _tuples(value):
    """JSON lists back to tuples (hashable, as Flax module attributes should be)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def build_model(config: RunConfig, *, training: bool = True) -> nn.Module:
    """The flow described by a run config, with the run's pre-processing at its front.

    Vectors are standardised with the stored ``mean``/``std``; images are scaled from
    ``[0, levels)`` to ``[0, 1)`` and optionally logit-transformed (``logit_alpha``).

    Args:
        config: the content of a run's ``config.json``.
        training: training-mode estimators (True) or evaluation mode (False).

    Returns:
        The model (a :class:`jflows.models.Flow`; for a hybrid run, one with ``n_classes``,
        the :class:`jflows.models.Hybrid` around it).

    Example:
        >>> flow = build_model(read_config("runs/moons"), training=False)  # a run of jflows train
        >>> type(flow).__name__, flow.event_shape
        ('Flow', (2,))
    """
    options = check_options(config["model"], _tuples(config["options"]))
    if config["kind"] == "vector":
        pre = [*lattice_layers(config), *vector_preprocessing(config["mean"], config["std"])]
    else:
        pre = image_preprocessing(
            config["levels"], config["logit_alpha"], config.get("dequantization") or "uniform"
        )
    factory = MODELS[config["model"]]
    shape = tuple(config["event_shape"])
    context_shape = config.get("context_shape")
    if context_shape is not None:  # a conditional run: p(x | c), contexts standardised
        check_conditional(config["model"], config.get("context") or config["data"])
        options = {**options, "context_shape": tuple(context_shape)}
    flow = factory(shape, preprocessing=pre, training=training, **options)
    if context_shape is not None and isinstance(flow, Flow):
        flow = flow.clone(context_mean=config["context_mean"], context_std=config["context_std"])
    if config.get("n_classes") is not None:  # a hybrid run: the flow plus its classifier head
        return hybrid(flow, config["n_classes"])
    return flow


def build_optimizer(config: RunConfig):
    """The optimizer of a run config (Adam or AdamW, a schedule, optional clipping)."""
    return make_optimizer(
        config["lr"],
        steps=config["steps"],
        schedule=config.get("schedule") or "cosine",
        warmup_steps=config.get("warmup_steps") or 0,
        grad_clip=config.get("grad_clip"),
        weight_decay=config.get("weight_decay") or 0.0,
    )


EVAL_OPTIONS = (
    "inverse_max_iter", "inverse_atol", "inverse_rtol", "on_nonconvergence", "inverse_damping",
)
"""Model options that change how a trained model is evaluated or sampled, not its parameters
(the fixed-point inverse's cap, tolerances and policy, and MintNet's damping of it): ``jflows
eval`` and ``jflows sample`` take them through ``--opt`` and override the run's values for that
command only; ``jflows train`` on an existing run may change them too."""


def with_eval_options(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``config`` with its model options updated by ``overrides`` (evaluation-time only).

    Raises:
        ConfigError: an option outside :data:`EVAL_OPTIONS` (it would change the architecture
            or the parameters of the trained model), or one the model does not take.

    Example:
        On a ``resflow`` run, ``{"inverse_max_iter": 2000}`` raises the cap of the fixed-point
        inverses; a RealNVP has none:

        >>> with_eval_options(read_config("runs/moons"), {"inverse_max_iter": 2000})
        Traceback (most recent call last):
        ...
        jflows.errors.ConfigError: ...
    """
    for key in overrides:
        if key not in EVAL_OPTIONS:
            raise ConfigError(
                f"--opt {key}=... would change the architecture or the parameters of the trained "
                f"run, so eval and sample do not take it; they take only the evaluation-time "
                f"options {', '.join(EVAL_OPTIONS)} (train a new run to change {key!r})"
            )
    options = check_options(config["model"], {**config["options"], **overrides})
    return config.replace(options=options)


def abstract_state(model: nn.Module, optimizer, config: RunConfig) -> TrainState:
    """Shapes and dtypes of the run's train state, computed by tracing only (no FLOPs).

    Also checks that the model can be initialised on the run's event shape: an option the
    event shape does not allow (a ConfigError or ShapeError of the factory or its layers)
    surfaces here, before anything is written. Other exceptions are bugs and propagate as
    themselves.
    """
    dtype = jnp.uint8 if config["kind"] == "image" else jnp.float32
    batch = jax.ShapeDtypeStruct((2, *config["event_shape"]), dtype)
    if config.get("context_shape") is not None:  # (x, context) of a conditional run
        batch = (batch, jax.ShapeDtypeStruct((2, *config["context_shape"]), jnp.float32))

    def create(x):
        return create_train_state(
            model, optimizer, x, jax.random.key(0)
        )

    return jax.eval_shape(create, batch)


def read_config(run_dir: str | os.PathLike) -> RunConfig:
    """Reads ``run_dir/config.json`` as a :class:`RunConfig` (any version up to the current).

    Raises:
        CheckpointError: ``run_dir`` is not a run, or its config is invalid or newer than this
            jflows reads (the message names the version, or the bad key).
    """
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isdir(run_dir):
        raise CheckpointError(
            f"run directory {os.fspath(run_dir)!r} does not exist; pass the --out directory of "
            f"a finished or interrupted `jflows train`"
        )
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{os.fspath(run_dir)!r} is not a jflows run (it has no {CONFIG_FILE}); pass the "
            f"--out directory of a `jflows train` run"
        )
    try:
        config = read_json(path)
        for key in ("model", "options", "kind", "event_shape", "data"):
            config[key]  # noqa: B018
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{path!r} is not a valid jflows run config ({type(err).__name__}: {err}); it was "
            f"edited or written by another program, so train a new run"
        ) from err
    version = config.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{path!r} has an invalid config version {version!r} (expected an integer from 1 "
            f"to {CONFIG_VERSION}); it was edited or written by another program"
        )
    if version > CONFIG_VERSION:
        raise CheckpointError(
            f"{path!r} is a version {version} run config (written by jflows "
            f"{config.get('jflows_version', '?')}), but jflows {__version__} reads config "
            f"versions up to {CONFIG_VERSION}; load the run with a newer jflows"
        )
    try:
        return RunConfig.from_dict({k: v for k, v in config.items() if k != "version"})
    except ConfigError as err:
        raise CheckpointError(
            f"{path!r} (config version {version}) is not a valid jflows run config: {err}; it "
            f"was edited or written by another program, so train a new run"
        ) from err


@dataclasses.dataclass
class LoadedRun:
    """A trained run: its config, both models and the restored state."""

    config: RunConfig
    model: nn.Module
    eval_model: nn.Module
    state: TrainState


def load_run(
    run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None
) -> LoadedRun:
    """Rebuilds a run's models from ``config.json`` and restores its best state.

    The best state (lowest validation NLL, see :func:`jflows.training.fit`) of the newest
    checkpoint that loads; the last state for runs without a validation split. A damaged
    newest checkpoint is skipped with a warning.

    Args:
        run_dir: the run directory.
        overrides: evaluation-time model options (:data:`EVAL_OPTIONS`), e.g. a larger
            ``inverse_max_iter``; they do not touch the run's files.

    Raises:
        CheckpointError: ``run_dir`` is not a run or holds no readable checkpoint.
        ConfigError: an override that is not an evaluation-time option.

    Example:
        >>> run = load_run("runs/moons")  # a run of jflows train
        >>> x = jnp.zeros((3, 2))
        >>> run.eval_model.apply(run.state.variables(), x, method="log_prob").shape
        (3,)
    """
    config = read_config(run_dir)
    if overrides:
        config = with_eval_options(config, overrides)
    model = build_model(config, training=True)
    eval_model = build_model(config, training=False)
    target = abstract_state(model, build_optimizer(config), config)
    ckpt_dir = os.path.join(run_dir, CHECKPOINT_DIR)
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(
            f"run {os.fspath(run_dir)!r} has no checkpoints yet; let `jflows train` run until "
            f"its first checkpoint (see --checkpoint-every)"
        )
    with Checkpointer(ckpt_dir, read_only=True) as checkpointer:
        state, _ = checkpointer.restore_best(target)
    return LoadedRun(config, model, eval_model, state)


def existing_config(out_dir: str | os.PathLike) -> RunConfig | None:
    """The config of the run in ``out_dir``, None if ``out_dir`` is absent or empty.

    Raises:
        CheckpointError: ``out_dir`` is a file, or a non-empty directory that is not a run
            (training there could overwrite someone's files).
    """
    if not os.path.exists(out_dir):
        return None
    if not os.path.isdir(out_dir):
        raise CheckpointError(
            f"--out {os.fspath(out_dir)!r} is a file, not a directory; pass a new directory"
        )
    if os.path.isfile(os.path.join(out_dir, CONFIG_FILE)):
        return read_config(out_dir)
    content = set(os.listdir(out_dir)) - {LOCK_FILE}
    if CHECKPOINT_DIR in content:
        raise CheckpointError(
            f"--out {os.fspath(out_dir)!r} holds checkpoints but no {CONFIG_FILE} (was it "
            f"written by jflows.training.fit without config=?); train it from Python with "
            f"jflows.training.train_run, or pass a new or empty directory"
        )
    if content:
        raise CheckpointError(
            f"--out {os.fspath(out_dir)!r} is a non-empty directory without {CONFIG_FILE}, so "
            f"not a jflows run; pass a new or empty directory (nothing was written)"
        )
    return None
