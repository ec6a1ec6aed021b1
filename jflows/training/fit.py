"""The training loop: on-device batches, periodic evaluation, checkpoints and resumption.

Reproducibility: from ``jax.random.key(seed)`` come an initialisation key, a data key and a
step key. The batch of step ``i`` is drawn (with replacement) from the training pool, which
lives on the device, with ``fold_in(data_key, i)``, and the step's own randomness
(dequantization, stochastic log-dets) comes from ``fold_in(step_key, i)``. A run resumed from a
checkpoint therefore sees exactly the batches and noise of an uninterrupted run, and ends with
the same parameters.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from tqdm import tqdm

from jflows.data import Dataset
from jflows.errors import CheckpointError, ConfigError, TrainingDivergedError
from jflows.training import parallel as par
from jflows.training.checkpoints import CHECKPOINT_DIR, Checkpointer
from jflows.training.lock import run_lock
from jflows.training.metrics import (
    append_jsonl,
    evaluate_nll,
    read_jsonl,
    summarize_nll,
    write_json,
    write_jsonl,
)
from jflows.training.optim import make_optimizer
from jflows.training.runs import CONFIG_FILE
from jflows.training.state import TrainState, create_train_state
from jflows.training.step import make_eval_step, make_lipschitz_refresh, make_train_step
from jflows.training.validation import (
    DEFAULT_PATIENCE,
    best_record,
    check_patience,
    check_val_fraction,
    default_val_fraction,
    divergence,
    evals_since_best,
    split_validation,
)

EVALS_FILE = "evals.jsonl"
METRICS_FILE = "metrics.json"
LOSS_REFRESH = 50
"""The progress bar's loss is pulled to the host every this many steps (and at evaluations)."""

logger = logging.getLogger(__name__)

INIT_ROWS = 1024
"""At most this many training rows go into ``init`` (ActNorm's data-dependent statistics)."""


def _batch_sampler(batch_size: int, mesh=None):
    def next_batch(pool, data_key, step_key, step):
        idx = jax.random.randint(jax.random.fold_in(data_key, step), (batch_size,), 0, len(pool))
        return pool[idx], jax.random.fold_in(step_key, step)

    if mesh is None:
        return jax.jit(next_batch)
    out = (par.batch_sharding(mesh), par.replicated_sharding(mesh))
    return jax.jit(next_batch, out_shardings=out)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _evaluate(
    eval_step, state, dataset: Dataset, val: np.ndarray | None, eval_batch_size: int,
    sharding=None,
) -> dict[str, float]:
    record = {}
    splits = [("test", dataset.test)] + ([] if val is None else [("val", val)])
    for split, rows in splits:
        nll = evaluate_nll(eval_step, state, rows, eval_batch_size, sharding=sharding)
        summary = summarize_nll(nll, dataset.dims, dataset.is_image)
        record[f"{split}_nll"] = summary["nll"]
        record[f"{split}_nll_stderr"] = summary["nll_stderr"]
        if dataset.is_image:
            record[f"{split}_bits_per_dim"] = summary["bits_per_dim"]
    return record


FIGURES = (
    "test_nll", "test_nll_stderr", "test_bits_per_dim", "val_nll", "val_nll_stderr",
    "val_bits_per_dim",
)


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
    ``steps``, ``stopped_early``, ``wall_time_s`` (summed over resumptions),
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
        devices: train data-parallel over this many devices (a ``jit`` step with the batch
            split over a mesh, see :mod:`jflows.training.parallel`); the results equal the
            single-device run's. After :func:`~jflows.training.parallel.initialize_distributed`
            the mesh spans every process (default: all devices), every process runs ``fit``
            with the same arguments, and only process 0 writes the JSON files.
        val_fraction: fraction of ``dataset.train`` held out for validation, in [0, 1);
            None: :func:`~jflows.training.validation.default_val_fraction`.
        patience: evaluations without a lower validation NLL before stopping (0: never stop
            early); None: 10 with a validation split, else 0.
        config: the run's ``config.json`` content, written (with the split's row counts
            ``n_train``, ``n_val``, ``n_test``, ``val_fraction`` and ``split_seed``) into
            ``out_dir`` under its lock.

    Returns:
        ``(state, history)``: the best state (the final one without a validation split) and
        the list of evaluation records.

    Raises:
        TrainingDivergedError: an evaluation's figures were not finite or most steps of its
            window were skipped; training stops there, after writing ``metrics.json``
            (with ``"diverged": true``).
        RunLockedError: another process is training in ``out_dir``.

    Example:
        >>> ds = load_dataset("8gaussians")
        >>> pre = vector_preprocessing(*vector_stats(ds.train))
        >>> flow = realnvp((2,), preprocessing=pre)
        >>> state, history = fit(flow, flow, ds, steps=2000, batch_size=500, learning_rate=1e-3)
        >>> history[-1]["test_nll"]
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
    fit_rows, val_rows = split_validation(len(dataset.train), val_fraction, seed)
    settings = dict(
        steps=steps, batch_size=batch_size, seed=seed, eval_every=eval_every,
        checkpoint_every=checkpoint_every, eval_batch_size=eval_batch_size, progress=progress,
        resume=resume, model_name=model_name, devices=devices, patience=patience,
        val_fraction=val_fraction,
    )
    with contextlib.ExitStack() as stack:
        if out_dir is not None and jax.process_index() == 0:
            stack.enter_context(run_lock(out_dir))
            if config is not None:
                split = dict(
                    n_train=len(dataset.train), n_val=len(val_rows), n_test=len(dataset.test),
                    val_fraction=val_fraction, split_seed=seed,
                )
                write_json(os.path.join(out_dir, CONFIG_FILE), {**config, **split})
        return _fit(model, eval_model, dataset, optimizer, out_dir, fit_rows, val_rows, settings)


def _fit(model, eval_model, dataset, optimizer, out_dir, fit_rows, val_rows, settings):
    steps, batch_size, seed = settings["steps"], settings["batch_size"], settings["seed"]
    eval_every, checkpoint_every = settings["eval_every"], settings["checkpoint_every"]
    eval_batch_size, patience = settings["eval_batch_size"], settings["patience"]
    started = time.perf_counter()
    train_rows = dataset.train[fit_rows] if len(val_rows) else dataset.train
    val = dataset.train[val_rows] if len(val_rows) else None
    init_key, data_key, step_key = jax.random.split(jax.random.key(seed), 3)
    multi = jax.process_count() > 1
    devices = settings["devices"]
    mesh = par.make_mesh(devices) if multi or (devices or 1) > 1 else None
    primary = jax.process_index() == 0
    n_rows = INIT_ROWS
    if mesh is not None:
        par.check_divisible(batch_size, mesh)
        par.check_divisible(eval_batch_size, mesh)
        n_rows -= INIT_ROWS % mesh.devices.size
    rows = np.random.default_rng(seed).permutation(len(train_rows))[:n_rows]

    def init():
        if mesh is None:
            return create_train_state(
                model, optimizer, train_rows[rows], init_key
            )
        init_rows = train_rows[rows][: len(rows) - len(rows) % mesh.devices.size]
        return par.create_sharded_train_state(
            model, optimizer, init_rows, init_key, mesh
        )

    checkpointer, latest, evals_path, previous_time, train_loss = None, None, None, 0.0, None
    best_state = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        evals_path = os.path.join(out_dir, EVALS_FILE) if primary else None
        checkpointer = Checkpointer(os.path.join(out_dir, CHECKPOINT_DIR))
        latest = checkpointer.latest_step()
        if latest is not None and not settings["resume"]:
            checkpointer.close()
            raise CheckpointError(
                f"{os.fspath(out_dir)!r} already holds checkpoints (latest step {latest}); "
                f"pass resume=True to continue that run or choose a fresh directory"
            )
    if latest is None:
        state = init()
    else:
        target = jax.eval_shape(init)
        if mesh is not None:
            rep = par.replicated_sharding(mesh)
            target = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), target
            )
        try:
            state, meta, best_state = checkpointer.restore(target, with_best=True)
        except CheckpointError:
            checkpointer.close()
            raise
        previous_time = float(meta.get("wall_time_s", 0.0))
        train_loss = meta.get("train_loss")
        logger.info(
            "resuming from step %d (checkpoint in %s)", int(state.step), checkpointer.directory
        )
    history: list[dict[str, Any]] = []
    if evals_path is not None:
        history = read_jsonl(evals_path, max_step=int(state.step))
        write_jsonl(evals_path, history)  # drop evaluations made after the checkpoint
    if val is None:
        best_state = None
    if mesh is None:
        train_step = make_train_step(model, optimizer)
        eval_step = make_eval_step(eval_model)
        pool = jax.device_put(np.asarray(train_rows))
        eval_sharding = None
    else:
        train_step = par.make_sharded_train_step(model, optimizer, mesh)
        eval_step = par.make_sharded_eval_step(eval_model, mesh)
        pool = par.place(train_rows, par.replicated_sharding(mesh))
        eval_sharding = par.batch_sharding(mesh)
    # the evaluation model refreshes with many more power iterations (Residual Flows: 200
    # before validation), so the saved state is normalised with converged vectors
    if mesh is None:
        refresh = make_lipschitz_refresh(eval_model)
    else:
        refresh = par.make_sharded_lipschitz_refresh(eval_model, mesh)
    next_batch = _batch_sampler(batch_size, mesh)

    def wall_time():
        return previous_time + time.perf_counter() - started

    def evaluate(step_done):
        record = {
            "step": step_done,
            **_evaluate(eval_step, state, dataset, val, eval_batch_size, eval_sharding),
        }
        record.update(
            train_loss=train_loss,
            nonfinite_steps=int(state.nonfinite_steps),
            wall_time_s=wall_time(),
        )
        history.append(record)
        if evals_path is not None:
            append_jsonl(evals_path, record)
        return record

    def stopped():
        return patience > 0 and val is not None and evals_since_best(history) >= patience

    start = int(state.step)
    last, diverged = None, None
    bar = tqdm(total=steps, initial=min(start, steps), disable=not settings["progress"],
               unit="step")
    try:
        for i in range(start, steps):
            if stopped():
                break
            batch, key = next_batch(pool, data_key, step_key, i)
            state, metrics = train_step(state, batch, key)
            done = i + 1
            final = done == steps
            if done % LOSS_REFRESH == 0 or final or done % eval_every == 0:
                train_loss = float(metrics["loss"])
                skipped = int(state.nonfinite_steps)
                bar.set_postfix(loss=f"{train_loss:.4f}", skipped=skipped, refresh=False)
            bar.update(1)
            if final:  # stored power-iteration vectors match the final weights
                state = refresh(state, batch, key)
            save = done % checkpoint_every == 0 or final
            if done % eval_every == 0 or final:
                previous = history[-1] if history else None
                last = evaluate(done)
                _log_evaluation(last)
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
            if checkpointer is not None and save:
                meta = {"wall_time_s": wall_time(), "train_loss": train_loss}
                checkpointer.save(done, state, meta, best=best_state)
        if last is None:  # nothing left to train: report the restored state
            last = history[-1] if history and history[-1]["step"] == start else evaluate(start)
            previous = history[-2] if len(history) > 1 else None
            diverged = divergence(last, previous)
    finally:
        bar.close()
        if checkpointer is not None:
            checkpointer.close()
    best = best_record(history) if val is not None else None
    chosen = best if best is not None else last
    summary = {key: chosen[key] for key in FIGURES if key in chosen}
    summary.update(
        steps=int(state.step),
        best_step=int(chosen["step"]),
        stopped_early=stopped() and int(state.step) < steps,
        final_test_nll=last.get("test_nll"),
        wall_time_s=wall_time(),
        nonfinite_steps=int(state.nonfinite_steps),
        train_loss=train_loss,
        model=settings["model_name"] or type(model).__name__,
        data=dataset.name,
        kind=dataset.kind,
        dims=dataset.dims,
        levels=dataset.levels,
        batch_size=batch_size,
        seed=seed,
        n_train=len(dataset.train),
        n_val=0 if val is None else len(val),
        n_fit=len(train_rows),
        n_test=len(dataset.test),
        val_fraction=settings["val_fraction"],
        patience=patience,
        finite=all(
            v is not None and math.isfinite(v) for k, v in chosen.items() if k in FIGURES
        ),
        diverged=diverged is not None,
    )
    if out_dir is not None and primary:
        write_json(os.path.join(out_dir, METRICS_FILE), summary)
    if diverged is not None:
        raise TrainingDivergedError(
            f"training diverged: {diverged} ({int(state.nonfinite_steps)} of {int(state.step)} "
            f"steps skipped in all); train a new run with a lower learning rate (--lr), "
            f"gradient clipping (--grad-clip 10) or a warm-up (--warmup-steps 100)",
            summary,
        )
    if best_state is not None:
        state = best_state
    return state, history


def _copy(state: TrainState) -> TrainState:
    return jax.tree_util.tree_map(lambda a: a.copy() if isinstance(a, jax.Array) else a, state)


def _log_evaluation(record: dict[str, Any]) -> None:
    parts = []
    for split in ("test", "val"):
        if f"{split}_nll" not in record:
            continue
        nll = record[f"{split}_nll"]
        text = f"{split}_nll {nll:.4f}" if nll is not None else f"{split}_nll nan"
        bpd = record.get(f"{split}_bits_per_dim")
        if bpd is not None:
            text += f" ({bpd:.4f} bits/dim)"
        parts.append(text)
    logger.info("step %d: %s", record["step"], ", ".join(parts))
