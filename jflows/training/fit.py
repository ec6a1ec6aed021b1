"""The training loop: on-device batches, periodic evaluation, checkpoints and resumption.

Reproducibility: from ``jax.random.key(seed)`` come an initialisation key, a data key and a
step key. The batch of step ``i`` is drawn (with replacement) from the training pool, which
lives on the device, with ``fold_in(data_key, i)``, and the step's own randomness
(dequantization, stochastic log-dets) comes from ``fold_in(step_key, i)``. A run resumed from a
checkpoint therefore sees exactly the batches and noise of an uninterrupted run, and ends with
the same parameters.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from tqdm import tqdm

from jflows.data import Dataset
from jflows.errors import CheckpointError, ConfigError
from jflows.training import parallel as par
from jflows.training.checkpoints import CHECKPOINT_DIR, Checkpointer
from jflows.training.metrics import (
    append_jsonl,
    evaluate_nll,
    read_jsonl,
    summarize_nll,
    write_json,
    write_jsonl,
)
from jflows.training.optim import make_optimizer
from jflows.training.state import TrainState, create_train_state
from jflows.training.step import make_eval_step, make_lipschitz_refresh, make_train_step

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
    eval_step, state, dataset: Dataset, eval_batch_size: int, sharding=None
) -> dict[str, float]:
    nll = evaluate_nll(eval_step, state, dataset.test, eval_batch_size, sharding=sharding)
    summary = summarize_nll(nll, dataset.dims, dataset.is_image)
    record = {"test_nll": summary["nll"], "test_nll_stderr": summary["nll_stderr"]}
    if dataset.is_image:
        record["test_bits_per_dim"] = summary["bits_per_dim"]
    return record


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
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Trains ``model`` on ``dataset.train`` by maximum likelihood and evaluates on its test set.

    With ``out_dir``, each evaluation is appended to ``out_dir/evals.jsonl``, orbax checkpoints
    (the last two) are written to ``out_dir/checkpoints`` every ``checkpoint_every`` steps and
    at the end, the run resumes from the latest checkpoint when there is one (``resume=True``),
    and ``out_dir/metrics.json`` gets the final figures: ``test_nll`` (nats per example of the
    raw data), ``test_bits_per_dim`` (images), ``steps``, ``wall_time_s`` (summed over
    resumptions), ``nonfinite_steps``, ``train_loss`` and the model and data names.

    Args:
        model: the training-mode flow (its pre-processing makes the NLL refer to raw data).
        eval_model: the same architecture in evaluation mode (``training=False``); it shares
            the parameters of ``model``.
        dataset: from :func:`jflows.data.load_dataset`; image data are dequantized per step.
        steps: total number of steps (a resumed run continues up to it).
        batch_size: rows per step.
        learning_rate: Adam's rate when ``optimizer`` is None.
        seed: seeds initialisation, batches and step noise.
        out_dir: run directory, or None to keep nothing on disk.
        eval_every: steps between test evaluations (one also runs at the end).
        checkpoint_every: steps between checkpoints.
        eval_batch_size: rows per evaluation call; the last batch is padded.
        optimizer: any optax transformation; default ``make_optimizer(learning_rate,
            grad_clip=grad_clip)`` (Adam).
        grad_clip: global-norm clipping of the default optimizer.
        progress: show a tqdm bar (loss refreshed every 50 steps). Resumption and
            evaluations are also reported through ``logging`` (logger ``jflows.training.fit``,
            level INFO).
        resume: continue from ``out_dir``'s latest checkpoint; if False, ``out_dir`` must not
            hold checkpoints.
        model_name: recorded in ``metrics.json`` (default: the module's class name).
        devices: train data-parallel over this many devices (a ``jit`` step with the batch
            split over a mesh, see :mod:`jflows.training.parallel`); the results equal the
            single-device run's. After :func:`~jflows.training.parallel.initialize_distributed`
            the mesh spans every process (default: all devices), every process runs ``fit``
            with the same arguments, and only process 0 writes the JSON files.

    Returns:
        ``(state, history)``: the final state and the list of evaluation records.

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
    started = time.perf_counter()
    if optimizer is None:
        optimizer = make_optimizer(learning_rate, grad_clip=grad_clip)
    image = dataset.is_image
    init_key, data_key, step_key = jax.random.split(jax.random.key(seed), 3)
    multi = jax.process_count() > 1
    mesh = par.make_mesh(devices) if multi or (devices or 1) > 1 else None
    primary = jax.process_index() == 0
    n_rows = INIT_ROWS
    if mesh is not None:
        par.check_divisible(batch_size, mesh)
        par.check_divisible(eval_batch_size, mesh)
        n_rows -= INIT_ROWS % mesh.devices.size
    rows = np.random.default_rng(seed).permutation(len(dataset.train))[:n_rows]

    def init():
        if mesh is None:
            return create_train_state(
                model, optimizer, dataset.train[rows], init_key, dequantize=image
            )
        init_rows = dataset.train[rows][: len(rows) - len(rows) % mesh.devices.size]
        return par.create_sharded_train_state(
            model, optimizer, init_rows, init_key, mesh, dequantize=image
        )

    checkpointer, latest, evals_path, previous_time, train_loss = None, None, None, 0.0, None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        evals_path = os.path.join(out_dir, EVALS_FILE) if primary else None
        checkpointer = Checkpointer(os.path.join(out_dir, CHECKPOINT_DIR))
        latest = checkpointer.latest_step()
        if latest is not None and not resume:
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
        state, meta = checkpointer.restore(target)
        previous_time = float(meta.get("wall_time_s", 0.0))
        train_loss = meta.get("train_loss")
        logger.info("resuming from step %d (checkpoint in %s)", latest, checkpointer.directory)
    history: list[dict[str, Any]] = []
    if evals_path is not None:
        history = read_jsonl(evals_path, max_step=int(state.step))
        write_jsonl(evals_path, history)  # drop evaluations made after the checkpoint
    if mesh is None:
        train_step = make_train_step(model, optimizer, dequantize=image)
        eval_step = make_eval_step(eval_model, dequantize=image)
        pool = jax.device_put(np.asarray(dataset.train))
        eval_sharding = None
    else:
        train_step = par.make_sharded_train_step(model, optimizer, mesh, dequantize=image)
        eval_step = par.make_sharded_eval_step(eval_model, mesh, dequantize=image)
        pool = par.place(dataset.train, par.replicated_sharding(mesh))
        eval_sharding = par.batch_sharding(mesh)
    # the evaluation model refreshes with many more power iterations (Residual Flows: 200
    # before validation), so the saved state is normalised with converged vectors
    if mesh is None:
        refresh = make_lipschitz_refresh(eval_model, dequantize=image)
    else:
        refresh = par.make_sharded_lipschitz_refresh(eval_model, mesh, dequantize=image)
    next_batch = _batch_sampler(batch_size, mesh)

    def wall_time():
        return previous_time + time.perf_counter() - started

    def evaluate(step_done):
        record = {
            "step": step_done,
            **_evaluate(eval_step, state, dataset, eval_batch_size, eval_sharding),
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

    start = int(state.step)
    last = None
    bar = tqdm(total=steps, initial=min(start, steps), disable=not progress, unit="step")
    try:
        for i in range(start, steps):
            batch, key = next_batch(pool, data_key, step_key, i)
            state, metrics = train_step(state, batch, key)
            done = i + 1
            final = done == steps
            if done % LOSS_REFRESH == 0 or final or done % eval_every == 0:
                train_loss = float(metrics["loss"])
                bar.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
            bar.update(1)
            if final:  # stored power-iteration vectors match the final weights
                state = refresh(state, batch, key)
            if done % eval_every == 0 or final:
                last = evaluate(done)
                bpd = last.get("test_bits_per_dim")
                extra = "" if bpd is None else f" ({bpd:.4f} bits/dim)"
                logger.info("step %d: test_nll %.4f%s", done, last["test_nll"], extra)
            if checkpointer is not None and (done % checkpoint_every == 0 or final):
                meta = {"wall_time_s": wall_time(), "train_loss": train_loss}
                checkpointer.save(done, state, meta)
        if last is None:  # nothing left to train: report the restored state
            last = history[-1] if history and history[-1]["step"] == start else evaluate(start)
    finally:
        bar.close()
        if checkpointer is not None:
            checkpointer.close()
    if out_dir is not None and primary:
        summary = {
            key: last[key]
            for key in ("test_nll", "test_nll_stderr", "test_bits_per_dim")
            if key in last
        }
        summary.update(
            steps=int(state.step),
            wall_time_s=wall_time(),
            nonfinite_steps=int(state.nonfinite_steps),
            train_loss=train_loss,
            model=model_name or type(model).__name__,
            data=dataset.name,
            kind=dataset.kind,
            dims=dataset.dims,
            levels=dataset.levels,
            batch_size=batch_size,
            seed=seed,
        )
        write_json(os.path.join(out_dir, METRICS_FILE), summary)
    return state, history
