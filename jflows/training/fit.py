"""The training entry point: :func:`fit` trains a flow and keeps its run directory.

``fit`` is assembled from three parts: :mod:`jflows.training.run_files` (the run directory:
lock, ``config.json``, checkpoints and resumption, ``evals.jsonl``, ``metrics.json``),
:mod:`jflows.training.fit_steps` (the compiled initialisation, batch sampler, training and
evaluation steps and Lipschitz refresh, built once on a device mesh for any number of devices)
and :mod:`jflows.training.loop` (steps, evaluations, best state, early stopping, checkpoints).

Reproducibility: from ``jax.random.key(seed)`` come an initialisation key, a data key and a
step key. The batch of step ``i`` is drawn (with replacement) from the training pool, which
lives on the devices, with ``fold_in(data_key, i)``, and the step's own randomness
(dequantization, stochastic log-dets) comes from ``fold_in(step_key, i)``. A run resumed from a
checkpoint therefore sees exactly the batches and noise of an uninterrupted run, and ends with
the same parameters; a run on ``n`` devices ends with the one-device run's parameters up to
rounding.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import optax

from jflows.data import Dataset
from jflows.errors import ConfigError, TrainingDivergedError
from jflows.training.batches import dataset_rows, n_rows, take
from jflows.training.compile_cache import enable_compilation_cache
from jflows.training.figures import all_figure_keys, estimate_of, figure_key
from jflows.training.fit_steps import build_fit_steps, fit_mesh
from jflows.training.loop import LoopResult, LoopSettings, train_loop
from jflows.training.optim import make_optimizer
from jflows.training.run_files import EVALS_FILE, METRICS_FILE, RunFiles, locked_run

__all__ = ["EVALS_FILE", "FIGURES", "METRICS_FILE", "fit"]
from jflows.training.state import TrainState
from jflows.training.validation import (
    DEFAULT_PATIENCE,
    best_record,
    check_patience,
    check_val_fraction,
    default_val_fraction,
    split_validation,
)

FIGURES = all_figure_keys()
"""Every figure an evaluation may hold (any label); ``metrics.json`` copies those present."""


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def fit(
    model: nn.Module,
    eval_model: nn.Module,
    dataset: Dataset,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float = 1e-3,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    eval_every: int = 1000,
    checkpoint_every: int = 1000,
    eval_batch_size: int = 1000,
    optimizer: optax.GradientTransformation | None = None,
    grad_clip: float | None = None,
    progress: bool = True,
    resume: bool = True,
    model_name: str | None = None,
    devices: int | None = None,
    val_fraction: float | None = None,
    patience: int | None = None,
    config: dict[str, Any] | None = None,
    compile_cache: str | os.PathLike | bool = True,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Trains ``model`` on ``dataset.train`` by maximum likelihood and evaluates on its test set.

    A validation split of ``dataset.train`` is held out when ``val_fraction > 0`` (default:
    0.1 below 10 000 training rows, see :mod:`jflows.training.validation`); every evaluation
    then scores it beside the test set, the state with the lowest validation NLL is kept as
    the *best* state, and training stops after ``patience`` evaluations without improvement.

    With ``out_dir``, the directory is locked against a second training (see
    :mod:`jflows.training.lock`), each evaluation is appended to ``out_dir/evals.jsonl``,
    orbax checkpoints (the last two, each also holding the best state) are written to
    ``out_dir/checkpoints`` every ``checkpoint_every`` steps and at the end, the run resumes
    from the newest checkpoint that loads when there is one (``resume=True``), and
    ``out_dir/metrics.json`` gets the final figures: ``test_nll`` (nats per example of the raw
    data) and ``val_nll`` of the best state, ``best_step``, ``test_bits_per_dim`` (images),
    each named by what the evaluation model's ``log_prob`` is (``test_nll_bound``,
    ``test_bits_per_dim_bound`` for a bound such as dequantized images; see
    :mod:`jflows.training.figures`) with ``likelihood`` saying which, ``final_test_nll`` (or
    ``final_test_nll_bound``: the last evaluation's), ``steps``, ``stopped_early``,
    ``wall_time_s`` (summed over resumptions),
    ``nonfinite_steps``, ``train_loss``, ``finite``/``diverged``, the split (``n_train`` rows
    of ``dataset.train``, of which ``n_val`` validate and ``n_fit`` train; ``n_test``) and the
    model and data names.
    JSON files are strict: a non-finite figure is written as ``null`` with ``"finite": false``.
    With ``config`` (from :func:`jflows.training.runs.make_run_config`), ``out_dir/config.json``
    is written too, so that ``jflows eval``, ``jflows sample`` and ``jflows train`` can use the
    directory; :func:`jflows.training.train_run` does all of this from a model name.

    Args:
        model: the training-mode flow (its pre-processing makes the NLL refer to raw data).
        eval_model: the same architecture in evaluation mode (``training=False``); it shares
            the parameters of ``model``.
        dataset: from :func:`jflows.data.load_dataset`; image models dequantize
            their integer levels in their first layer.
        steps: total number of steps (a resumed run continues up to it).
        batch_size: rows per step.
        learning_rate: Adam's rate when ``optimizer`` is None.
        seed: seeds initialisation, batches, step noise and the validation split.
        out_dir: run directory, or None to keep nothing on disk.
        eval_every: steps between evaluations (one also runs at the end).
        checkpoint_every: steps between checkpoints.
        eval_batch_size: rows per evaluation call; the last batch is padded.
        optimizer: any optax transformation; default ``make_optimizer(learning_rate,
            grad_clip=grad_clip)`` (Adam).
        grad_clip: global-norm clipping of the default optimizer.
        progress: show a tqdm bar (loss and skipped steps refreshed every 50 steps).
            Resumption and evaluations are also reported through ``logging`` (logger
            ``jflows.training.fit``, level INFO).
        resume: continue from ``out_dir``'s latest checkpoint; if False, ``out_dir`` must not
            hold checkpoints.
        model_name: recorded in ``metrics.json`` (default: the module's class name).
        devices: train data-parallel over this many devices (default 1): every step runs
            under ``jit`` with the batch split over a one-axis mesh of that many devices, the
            same code for one device as for several (see
            :mod:`jflows.training.fit_steps`); the results equal the single-device run's up to
            rounding. ``batch_size`` and ``eval_batch_size`` must be multiples of it. After
            :func:`~jflows.training.parallel.initialize_distributed` the mesh spans every
            process (default: all devices), every process runs ``fit`` with the same
            arguments, and only process 0 writes the JSON files.
        val_fraction: fraction of ``dataset.train`` held out for validation, in [0, 1);
            None: :func:`~jflows.training.validation.default_val_fraction`.
        patience: evaluations without a lower validation NLL before stopping (0: never stop
            early); None: 10 with a validation split, else 0.
        config: the run's ``config.json`` content, written (with the split's row counts
            ``n_train``, ``n_val``, ``n_test``, ``val_fraction`` and ``split_seed``) into
            ``out_dir`` under its lock.
        compile_cache: JAX's persistent compilation cache, so a restart loads the compiled
            steps instead of compiling them: True (the default: ``JFLOWS_COMPILATION_CACHE`` or
            ``~/.cache/jflows/xla``), a directory, or False (off); see
            :mod:`jflows.training.compile_cache`. With it, the traced steps are stored too
            (:mod:`jflows.training.trace_cache`), so a restart skips tracing as well.

    Returns:
        ``(state, history)``: the best state (the final one without a validation split) and
        the list of evaluation records.

    Raises:
        TrainingDivergedError: an evaluation's figures were not finite or most steps of its
            window were skipped; training stops there, after writing ``metrics.json``
            (with ``"diverged": true``).
        RunLockedError: another process is training in ``out_dir``.

    Example:
        >>> ds = jflows.data.load_dataset("8gaussians", n_train=512, n_test=256)
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> state, history = fit(flow, flow, ds, steps=20, batch_size=64, eval_every=10,
        ...                      eval_batch_size=128, progress=False)
        >>> [r["step"] for r in history], history[-1]["likelihood"], int(state.step)
        ([10, 20], 'exact', 20)
    """
    _check_positive(
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        eval_batch_size=eval_batch_size,
    )
    if val_fraction is None:
        val_fraction = default_val_fraction(len(dataset.train))
    val_fraction = check_val_fraction(val_fraction)
    if patience is None:
        patience = DEFAULT_PATIENCE if val_fraction > 0 else 0
    patience = check_patience(patience)
    if optimizer is None:
        optimizer = make_optimizer(learning_rate, grad_clip=grad_clip)
    if compile_cache is not False:
        enable_compilation_cache(None if compile_cache is True else compile_cache)
    started = time.perf_counter()
    fit_rows, val_rows = split_validation(len(dataset.train), val_fraction, seed)
    all_rows = dataset_rows(dataset, "train")  # (x, context) for conditional data
    train_rows = take(all_rows, fit_rows) if len(val_rows) else all_rows
    val = take(all_rows, val_rows) if len(val_rows) else None
    split = dict(
        n_train=len(dataset.train), n_val=len(val_rows), n_test=len(dataset.test),
        val_fraction=val_fraction, split_seed=seed,
    )
    settings = LoopSettings(steps, eval_every, checkpoint_every, eval_batch_size, patience,
                            progress)
    init_key, data_key, step_key = jax.random.split(jax.random.key(seed), 3)
    fns = build_fit_steps(model, eval_model, optimizer, train_rows, fit_mesh(devices),
                          batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
    config = None if config is None else {**config, **split}
    with locked_run(out_dir, config), RunFiles(out_dir, resume=resume) as files:
        restored = files.restore(lambda: fns.init(init_key), fns.mesh)
        if restored is None:
            state, best_state, previous_time, train_loss = fns.init(init_key), None, 0.0, None
        else:
            state, best_state, previous_time, train_loss = restored
        result = train_loop(
            fns, eval_model, files, dataset, val, (data_key, step_key), settings, state,
            best_state=best_state, train_loss=train_loss, previous_time=previous_time,
            started=started,
        )
        summary = _summary(result, model, eval_model, dataset, settings, split,
                           model_name=model_name, batch_size=batch_size, seed=seed,
                           n_fit=n_rows(train_rows))
        files.write_metrics(summary)
    if result.diverged is not None:
        state = result.state
        raise TrainingDivergedError(
            f"training diverged: {result.diverged} ({int(state.nonfinite_steps)} of "
            f"{int(state.step)} steps skipped in all); train a new run with a lower learning "
            f"rate (--lr), gradient clipping (--grad-clip 10) or a warm-up (--warmup-steps 100)",
            summary,
        )
    best = result.best_state
    return (result.state if best is None else best), result.history


def _summary(result: LoopResult, model, eval_model, dataset: Dataset, settings: LoopSettings,
             split: dict[str, Any], *, model_name, batch_size, seed, n_fit) -> dict[str, Any]:
    """``metrics.json``: the figures of the best (or last) evaluation and the run's facts."""
    history, last, state = result.history, result.last, result.state
    best = best_record(history) if split["n_val"] else None
    chosen = best if best is not None else last
    summary = {key: chosen[key] for key in FIGURES if key in chosen}
    final_key = figure_key("test", "nll", estimate_of(eval_model))
    summary.update(
        likelihood=last.get("likelihood"),
        steps=int(state.step),
        best_step=int(chosen["step"]),
        stopped_early=result.stopped_early,
        **{f"final_{final_key}": last.get(final_key)},
        wall_time_s=result.wall_time_s,
        nonfinite_steps=int(state.nonfinite_steps),
        train_loss=result.train_loss,
        model=model_name or type(model).__name__,
        data=dataset.name,
        kind=dataset.kind,
        dims=dataset.dims,
        levels=dataset.levels,
        batch_size=batch_size,
        seed=seed,
        n_train=split["n_train"],
        n_val=split["n_val"],
        n_fit=n_fit,
        n_test=split["n_test"],
        val_fraction=split["val_fraction"],
        patience=settings.patience,
        finite=all(
            v is not None and math.isfinite(v) for k, v in chosen.items() if k in FIGURES
        ),
        diverged=result.diverged is not None,
    )
    return summary
