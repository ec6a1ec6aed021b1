"""The training loop of :func:`jflows.training.fit`: steps, evaluations and checkpoints.

:func:`train_loop` runs the steps of :class:`~jflows.training.fit_steps.FitSteps` from the
state's step up to ``steps``; every ``eval_every`` steps (and at the end) it evaluates the test
set and the validation split (:func:`evaluation_record`), keeps the state with the lowest
validation NLL, stops after ``patience`` evaluations without improvement or when the run
diverged (:func:`~jflows.training.validation.divergence`), and checkpoints through
:class:`~jflows.training.run_files.RunFiles` every ``checkpoint_every`` steps and at the end.

Evaluation records name their figures by what the evaluation model's ``log_prob`` is
(:mod:`jflows.training.figures`): ``test_nll`` for exact or unbiased values, ``test_nll_bound``
and ``test_bits_per_dim_bound`` for a bound (dequantized images), with ``"likelihood"`` saying
which.

Example:
    >>> record = {"step": 8, "test_nll_bound": 2.5, "test_bits_per_dim_bound": 0.9}
    >>> evaluation_line(record)
    'step 8: test_nll_bound 2.5000 (0.9000 bits/dim)'
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from jflows.data import Dataset
from jflows.training.batches import dataset_rows
from jflows.training.figures import (
    estimate_of,
    find_figure,
    labelled,
    likelihood_name,
    read_figure,
)
from jflows.training.fit_steps import FitSteps
from jflows.training.metrics import evaluate_nll, summarize_nll
from jflows.training.run_files import RunFiles
from jflows.training.state import TrainState
from jflows.training.validation import best_record, divergence, evals_since_best

LOSS_REFRESH = 50
"""The progress bar's loss is pulled to the host every this many steps (and at evaluations)."""

logger = logging.getLogger("jflows.training.fit")


class LoopSettings(NamedTuple):
    """The loop's schedule (see :func:`jflows.training.fit` for each)."""

    steps: int
    eval_every: int
    checkpoint_every: int
    eval_batch_size: int
    patience: int
    progress: bool


class LoopResult(NamedTuple):
    """Where the loop ended."""

    state: TrainState
    best_state: TrainState | None
    history: list[dict[str, Any]]
    last: dict[str, Any]
    diverged: str | None
    train_loss: float | None
    wall_time_s: float
    stopped_early: bool


def evaluation_record(
    fns: FitSteps,
    eval_model,
    state: TrainState,
    dataset: Dataset,
    val: np.ndarray | None,
    eval_batch_size: int,
) -> dict[str, Any]:
    """The labelled figures of ``state`` on the test set and the validation rows (if any).

    The keys are ``figure_key(split, figure, estimate_of(eval_model))`` for ``nll``,
    ``nll_stderr`` and (images) ``bits_per_dim``, plus ``"likelihood"``.
    """
    estimate = estimate_of(eval_model)
    record: dict[str, Any] = {}
    test = dataset_rows(dataset, "test")  # (x, context) for conditional data
    splits = [("test", test)] + ([] if val is None else [("val", val)])
    for split, rows in splits:
        nll = evaluate_nll(fns.eval, state, rows, eval_batch_size, sharding=fns.eval_sharding)
        record.update(labelled(summarize_nll(nll, dataset.dims, dataset.is_image), split, estimate))
    record["likelihood"] = likelihood_name(estimate)
    return record


def evaluation_line(record: dict[str, Any]) -> str:
    """``"step 8: test_nll 1.2345 (0.5 bits/dim), val_nll ..."``, with the figures' labels."""
    parts = []
    for split in ("test", "val"):
        key = find_figure(record, split, "nll")
        if key is None:
            continue
        nll = record[key]
        text = f"{key} {nll:.4f}" if nll is not None else f"{key} nan"
        bpd = read_figure(record, split, "bits_per_dim")
        if bpd is not None:
            text += f" ({bpd:.4f} bits/dim)"
        parts.append(text)
    return f"step {record['step']}: {', '.join(parts)}"


def _copy(state: TrainState) -> TrainState:
    return jax.tree_util.tree_map(lambda a: a.copy() if isinstance(a, jax.Array) else a, state)


def train_loop(
    fns: FitSteps,
    eval_model,
    files: RunFiles,
    dataset: Dataset,
    val: np.ndarray | None,
    keys: tuple[jax.Array, jax.Array],
    settings: LoopSettings,
    state: TrainState,
    *,
    best_state: TrainState | None = None,
    train_loss: float | None = None,
    previous_time: float = 0.0,
    started: float | None = None,
) -> LoopResult:
    """Trains ``state`` up to ``settings.steps``; evaluates, keeps the best state, checkpoints.

    Args:
        fns: the compiled functions (:func:`~jflows.training.fit_steps.build_fit_steps`).
        eval_model: the evaluation model (its estimate labels the figures).
        files: the run directory (``RunFiles(None)`` for none); closed on the way out.
        dataset: its test set is evaluated.
        val: validation rows, or None.
        keys: ``(data_key, step_key)``.
        settings: the schedule.
        state: the state to continue from (initial or restored).
        best_state: the restored best state (with a validation split).
        train_loss: the restored last training loss.
        previous_time: wall time of earlier sessions of the run (seconds).
        started: ``time.perf_counter()`` when this session began (default: now).
    """
    data_key, step_key = keys
    steps, patience = settings.steps, settings.patience
    started = time.perf_counter() if started is None else started
    history = files.history(int(state.step))
    best_state = best_state if val is not None else None

    def wall_time():
        return previous_time + time.perf_counter() - started

    def evaluate(step_done):
        figures = evaluation_record(
            fns, eval_model, state, dataset, val, settings.eval_batch_size
        )
        record = {"step": step_done, **figures}
        record.update(
            train_loss=train_loss,
            nonfinite_steps=int(state.nonfinite_steps),
            wall_time_s=wall_time(),
        )
        history.append(record)
        files.append(record)
        return record

    def stopped():
        return patience > 0 and val is not None and evals_since_best(history) >= patience

    start = int(state.step)
    last, diverged = None, None
    bar = tqdm(total=steps, initial=min(start, steps), disable=not settings.progress, unit="step")
    try:
        for i in range(start, steps):
            if stopped():
                break
            batch, key = fns.next_batch(fns.pool, data_key, step_key, i)
            state, metrics = fns.train(state, batch, key)
            done = i + 1
            final = done == steps
            if done % LOSS_REFRESH == 0 or final or done % settings.eval_every == 0:
                train_loss = float(metrics["loss"])
                skipped = int(state.nonfinite_steps)
                bar.set_postfix(loss=f"{train_loss:.4f}", skipped=skipped, refresh=False)
            bar.update(1)
            if final:  # stored power-iteration vectors match the final weights
                state = fns.refresh(state, batch, key)
            save = done % settings.checkpoint_every == 0 or final
            if done % settings.eval_every == 0 or final:
                previous = history[-1] if history else None
                last = evaluate(done)
                logger.info("%s", evaluation_line(last))
                if val is not None and best_record(history) is last:
                    best_state = _copy(state)  # the train step donates its input buffers
                diverged = divergence(last, previous)
                if diverged is not None:
                    break
                if stopped():
                    logger.info(
                        "step %d: no better validation NLL in %d evaluations; stopping (best "
                        "step %d)", done, patience, best_record(history)["step"],
                    )
                    save = True
            if save:
                meta = {"wall_time_s": wall_time(), "train_loss": train_loss}
                files.save(done, state, meta, best_state)
        if last is None:  # nothing left to train: report the restored state
            last = history[-1] if history and history[-1]["step"] == start else evaluate(start)
            previous = history[-2] if len(history) > 1 else None
            diverged = divergence(last, previous)
    finally:
        bar.close()
        files.close()
    return LoopResult(
        state=state,
        best_state=best_state,
        history=history,
        last=last,
        diverged=diverged,
        train_loss=train_loss,
        wall_time_s=wall_time(),
        stopped_early=stopped() and int(state.step) < steps,
    )
