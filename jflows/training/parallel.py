"""Data-parallel training on several devices, or several hosts, with JAX's own SPMD machinery.

Two ways to run one training step on ``n`` devices, both equal to the single-device step on the
same global batch:

* :func:`make_sharded_train_step` (recommended): the ordinary step under ``jax.jit`` with the
  state replicated and the batch split over a one-axis :class:`~jax.sharding.Mesh`
  (``NamedSharding``); XLA inserts the gradient all-reduce. Every random draw (dequantization
  noise, Hutchinson probes, the roulette length) is made as if on one device, because JAX's
  partitionable threefry RNG gives the same bits whatever the sharding, so the result equals the
  single-device step draw for draw. The same mesh spans several hosts after
  :func:`initialize_distributed`.
* :func:`make_pmap_train_step`: the same step under ``jax.pmap`` with ``lax.pmean`` of the loss
  and gradients, for users of that API. Dequantization noise is drawn for the gathered global
  batch (so it equals the single-device draw); the ``logdet`` stream is folded with the replica
  index, so each replica draws its own Hutchinson probes and roulette length (as PyTorch's
  DataParallel replicas do in the Residual Flows code): equal in distribution, not draw for draw.

ActNorm's data-dependent initialisation sees the **global** batch:
:func:`create_sharded_train_state` runs ``init`` under ``jit`` on the batch sharded over the
mesh, so its means and variances are
all-reduced over devices (never per-replica statistics); for ``pmap`` the state is initialised
once on the global batch and then replicated. Power-iteration vectors depend only on the
(replicated) weights, so they stay identical on every replica without communication.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jflows.errors import ConfigError
from jflows.training.state import TrainState, create_train_state
from jflows.training.step import (
    TrainStep,
    lipschitz_refresh_fn,
    make_eval_step,
    train_step_fn,
)

DATA_AXIS = "data"


def make_mesh(n_devices: int | None = None) -> Mesh:
    """A one-axis mesh (``"data"``) over the first ``n_devices`` of ``jax.devices()``.

    With several processes (after :func:`initialize_distributed`) ``jax.devices()`` lists the
    devices of every host, so the mesh spans all of them.
    """
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if not 1 <= n <= len(devices):
        raise ConfigError(
            f"asked for {n_devices} devices, but JAX sees {len(devices)} ({devices}); on CPU, "
            f"set XLA_FLAGS=--xla_force_host_platform_device_count=N before starting Python"
        )
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split over the ``"data"`` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh) -> None:
    """Raises ConfigError unless the batch splits evenly over the mesh."""
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(
            f"batch size {batch_size} does not split over {n} devices; use a multiple of {n}"
        )


def replicate(tree, mesh: Mesh):
    """Places every leaf of ``tree`` on every device of ``mesh`` (works across hosts).

    Every process must pass the same values (e.g. a state initialised from the same seed).
    """
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda leaf: place(leaf, sharding), tree)


def shard_batch(local_batch, mesh: Mesh) -> jax.Array:
    """A global batch from this process's rows (all rows when there is one process)."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), np.asarray(local_batch))


def place(array, sharding: NamedSharding) -> jax.Array:
    """Places a host array that every process holds in full according to ``sharding``."""
    host = np.asarray(array)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(tree):
    """Copies a (replicated) state to host numpy arrays, e.g. before single-process work."""
    return jax.tree.map(np.asarray, tree)


def create_sharded_train_state(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    init_batch,
    key: jax.Array,
    mesh: Mesh,
) -> TrainState:
    """:func:`~jflows.training.create_train_state` with the init batch split over ``mesh``.

    The initialisation runs under ``jit`` on the sharded batch, so ActNorm's statistics are
    those of the whole batch; the returned state is replicated on every device.
    """
    check_divisible(len(init_batch), mesh)
    batch = shard_batch(init_batch, mesh)

    def create(x):
        return create_train_state(model, optimizer, x, key)

    return jax.jit(create, out_shardings=replicated_sharding(mesh))(batch)


def make_sharded_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
) -> TrainStep:
    """The training step under ``jit`` with the batch split over ``mesh`` (state donated).

    Example:
        >>> mesh = make_mesh(4)
        >>> state = create_sharded_train_state(flow, opt, x[:512], jax.random.key(0), mesh)
        >>> step = make_sharded_train_step(flow, opt, mesh)
        >>> state, metrics = step(state, shard_batch(x[:512], mesh), jax.random.key(1))
    """
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    fn = train_step_fn(model, optimizer)
    return jax.jit(fn, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=0)


def make_sharded_eval_step(model: nn.Module, mesh: Mesh):
    """The per-example NLL under ``jit`` with the batch split over ``mesh``.

    The result is replicated, so every process can read it (see
    :func:`jflows.training.make_eval_step`).
    """
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    fn = make_eval_step(model)
    return jax.jit(fn, in_shardings=(rep, data, rep), out_shardings=rep)


def make_sharded_lipschitz_refresh(model: nn.Module, mesh: Mesh):
    """:func:`jflows.training.make_lipschitz_refresh` with the batch split over ``mesh``."""
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    fn = lipschitz_refresh_fn(model)
    return jax.jit(fn, in_shardings=(rep, data, rep), out_shardings=rep)


def make_pmap_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> TrainStep:
    """The training step under ``jax.pmap`` (``lax.pmean`` of loss and gradients).

    The state carries a leading replica axis (:func:`replicate_for_pmap`), the batch is split
    into ``(n_devices, batch / n_devices, ...)`` (:func:`split_for_pmap`), and the key is
    shared. Metrics come back per replica (all equal).

    Example:
        >>> step = make_pmap_train_step(flow, opt)
        >>> state = replicate_for_pmap(create_train_state(flow, opt, x[:512], key))
        >>> state, metrics = step(state, split_for_pmap(x[:512]), jax.random.key(1))
    """
    fn = train_step_fn(model, optimizer, axis_name=DATA_AXIS)
    return jax.pmap(
        fn, axis_name=DATA_AXIS, in_axes=(0, 0, None), donate_argnums=0, devices=devices
    )


def replicate_for_pmap(tree, devices: Sequence[jax.Device] | None = None):
    """Stacks one copy of ``tree`` per device (the layout ``pmap`` expects)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    sharding = jax.sharding.NamedSharding(Mesh(np.asarray(devices), (DATA_AXIS,)), P(DATA_AXIS))

    def stack(leaf):
        host = np.asarray(leaf)
        return jax.device_put(np.broadcast_to(host, (len(devices), *host.shape)), sharding)

    return jax.tree.map(stack, tree)


def split_for_pmap(batch, n_devices: int | None = None):
    """``(B, ...) -> (n, B / n, ...)`` for ``pmap``."""
    n = n_devices or jax.local_device_count()
    batch = np.asarray(batch)
    if len(batch) % n:
        raise ConfigError(
            f"batch size {len(batch)} does not split over {n} devices; use a multiple of {n}"
        )
    return batch.reshape(n, len(batch) // n, *batch.shape[1:])


def unreplicate(tree):
    """The first replica of a ``pmap``-replicated tree."""
    return jax.tree.map(lambda a: a[0], tree)


def initialize_distributed(coordinator: str, num_processes: int, process_id: int) -> None:
    """Joins a multi-process JAX run (one call per process, before anything else uses JAX).

    On CPU the collectives go through gloo. After it, ``jax.devices()`` lists the devices of
    every process and :func:`make_mesh` spans them; each process feeds its share of every batch
    (or the whole pool, replicated) and runs the same program.

    Example:
        >>> # on each of two hosts (process_id 0 and 1):
        >>> initialize_distributed("10.0.0.1:4321", num_processes=2, process_id=rank)
        >>> mesh = make_mesh()  # all devices of both hosts
    """
    # CPU collectives across processes (no effect on GPU/TPU); must precede backend start-up
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
