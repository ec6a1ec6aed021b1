"""The compiled functions of :func:`jflows.training.fit`, built once for any number of devices.

A single device is a one-device mesh: :func:`build_fit_steps` builds one initialisation, one
batch sampler, one training step, one evaluation step and one Lipschitz refresh, all compiled
under ``jax.jit`` over the one-axis mesh of :func:`fit_mesh`, with the state replicated and
every batch split over the mesh (see :mod:`jflows.training.parallel`). With one device the
splitting is trivial; with ``n`` the results equal the one-device run's up to rounding.

Reproducibility: the batch of step ``i`` is drawn (with replacement) from the training pool,
which lives on the devices, with ``fold_in(data_key, i)``, and the step's own randomness (every
stream the model declares) comes from ``fold_in(step_key, i)``.

Example:
    >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
    >>> rows = np.asarray(jax.random.normal(key, (256, 2)))
    >>> steps = build_fit_steps(flow, flow, optax.adam(1e-3), rows, fit_mesh(1), batch_size=32)
    >>> state = steps.init(key)
    >>> batch, step_key = steps.next_batch(steps.pool, key, key, 0)
    >>> state, metrics = steps.train(state, batch, step_key)
    >>> int(state.step), batch.shape
    (1, (32, 2))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from jflows.training.batches import Rows, n_rows, take
from jflows.training.parallel import (
    batch_sharding,
    check_divisible,
    make_mesh,
    place,
    replicated_sharding,
)
from jflows.training.state import TrainState, create_train_state
from jflows.training.step import (
    EvalStep,
    TrainStep,
    make_eval_step,
    make_lipschitz_refresh,
    make_train_step,
)

INIT_ROWS = 1024
"""At most this many training rows go into ``init`` (ActNorm's data-dependent statistics)."""

BatchSampler = Callable[[jax.Array, jax.Array, jax.Array, int], tuple[jax.Array, jax.Array]]


def fit_mesh(devices: int | None = None) -> Mesh:
    """The mesh ``fit`` trains on: the first ``devices`` devices.

    ``devices=None``: one device, or every device of every process after
    :func:`~jflows.training.parallel.initialize_distributed`.
    """
    if devices is None and jax.process_count() == 1:
        devices = 1
    return make_mesh(devices)


def make_batch_sampler(batch_size: int, mesh: Mesh) -> BatchSampler:
    """``next_batch(pool, data_key, step_key, step) -> (batch, key)``, jitted on ``mesh``.

    The batch (rows of ``pool`` drawn with ``fold_in(data_key, step)``) comes out split over
    the mesh, the step's key (``fold_in(step_key, step)``) replicated.
    """

    def next_batch(pool, data_key, step_key, step):
        rows = n_rows(pool)  # pool: the rows, or (rows, contexts) of conditional data
        idx = jax.random.randint(jax.random.fold_in(data_key, step), (batch_size,), 0, rows)
        return take(pool, idx), jax.random.fold_in(step_key, step)

    out = (batch_sharding(mesh), replicated_sharding(mesh))
    return jax.jit(next_batch, out_shardings=out)


class FitSteps(NamedTuple):
    """Everything ``fit`` compiles, for one mesh.

    Attributes:
        mesh: the one-axis mesh every function runs on.
        init: ``init(key) -> state``, replicated
            (:func:`~jflows.training.create_train_state` on up to :data:`INIT_ROWS` training
            rows, the whole batch on every device, so ActNorm sees global statistics and the
            state is the one-device state whatever the number of devices).
        next_batch: the batch sampler (:func:`make_batch_sampler`).
        pool: the training rows (``(x, context)`` for conditional data), replicated on the
            mesh.
        train: the training step (:func:`~jflows.training.make_train_step`).
        eval: the evaluation step of the evaluation model.
        refresh: the Lipschitz refresh of the evaluation model.
        eval_sharding: how evaluation batches are placed (split over the mesh).
    """

    mesh: Mesh
    init: Callable[[jax.Array], TrainState]
    next_batch: BatchSampler
    pool: Rows
    train: TrainStep
    eval: EvalStep
    refresh: Callable[[TrainState, jax.Array, jax.Array], TrainState]
    eval_sharding: NamedSharding


def build_fit_steps(
    model: nn.Module,
    eval_model: nn.Module,
    optimizer: optax.GradientTransformation,
    train_rows: Rows,
    mesh: Mesh,
    *,
    batch_size: int,
    eval_batch_size: int | None = None,
    seed: int = 0,
) -> FitSteps:
    """Builds ``fit``'s functions on ``mesh`` (one device or many: the same code).

    Args:
        model: the training-mode model.
        eval_model: the evaluation-mode model (evaluation, and the refresh, whose many power
            iterations leave a saved state normalised with converged vectors).
        optimizer: the optax transformation.
        train_rows: the rows training draws from (every process holds them all): an array,
            or ``(x, context)`` for a conditional model (:mod:`jflows.training.batches`).
        mesh: from :func:`fit_mesh`.
        batch_size: rows per step (a multiple of the mesh's device count).
        eval_batch_size: rows per evaluation call (likewise; default ``batch_size``).
        seed: chooses the initialisation rows.

    Raises:
        ConfigError: a batch size does not split over the mesh.
    """
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    check_divisible(batch_size, mesh)
    check_divisible(eval_batch_size, mesh)
    order = np.random.default_rng(seed).permutation(n_rows(train_rows))
    init_rows = take(train_rows, order[:INIT_ROWS])

    def on_mesh(rows):  # every array of the rows, whole on every device
        return jax.tree.map(lambda a: place(a, replicated_sharding(mesh)), rows)

    def init(key: jax.Array) -> TrainState:  # the whole init batch on every device
        rows = on_mesh(init_rows)
        return create_train_state(model, optimizer, rows, key, mesh)

    return FitSteps(
        mesh=mesh,
        init=init,
        next_batch=make_batch_sampler(batch_size, mesh),
        pool=on_mesh(train_rows),
        train=make_train_step(model, optimizer, mesh),
        eval=make_eval_step(eval_model, mesh),
        refresh=make_lipschitz_refresh(eval_model, mesh),
        eval_sharding=batch_sharding(mesh),
    )
