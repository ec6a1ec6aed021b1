"""Where arrays live: one-axis device meshes, shardings and multi-host start-up.

jflows trains on one device or many with the same code: a single device is a one-device mesh.
The step builders of :mod:`jflows.training.step` take a :class:`~jax.sharding.Mesh` from
:func:`make_mesh` (``None``: the one-device mesh of the first device) and compile under
``jax.jit`` with the state replicated (:func:`replicated_sharding`) and the batch split over the
mesh's ``"data"`` axis (:func:`batch_sharding`); XLA inserts the gradient all-reduce.
:func:`jflows.training.fit` builds its steps this way for every device count. JAX's
partitionable threefry RNG gives the same bits whatever the sharding, so ``n`` devices follow
the one-device run draw for draw (dequantization noise, Hutchinson probes, roulette lengths).

ActNorm's data-dependent initialisation sees the **global** batch: ``fit`` runs ``init`` under
``jit`` on the batch split over the mesh, so its means and variances are all-reduced over
devices (never per-replica statistics). Power-iteration vectors depend only on the
(replicated) weights, so they stay identical on every device without communication.

The same mesh spans several hosts after :func:`initialize_distributed`. ``jax.pmap`` is kept
as an alternative in :mod:`jflows.training.pmap`.

Example:
    >>> mesh = make_mesh(1)  # make_mesh(4) with four devices
    >>> batch_sharding(mesh).spec, replicated_sharding(mesh).spec
    (P('data',), P())
    >>> shard_batch(np.zeros((8, 2)), mesh).shape
    (8, 2)
    >>> [a.shape for a in shard_batch((np.zeros((8, 2)), np.ones((8, 1))), mesh)]
    [(8, 2), (8, 1)]
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jflows.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(n_devices: int | None = None) -> Mesh:
    """A one-axis mesh (``"data"``) over the first ``n_devices`` of ``jax.devices()``.

    ``n_devices=None`` takes every device. With several processes (after
    :func:`initialize_distributed`) ``jax.devices()`` lists the devices of every host, so the
    mesh spans all of them. ``make_mesh(1)`` is the mesh of a single-device run.

    Example:
        >>> make_mesh(1).devices.size
        1
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


def shard_batch(local_batch, mesh: Mesh):
    """A global batch from this process's rows (all rows when there is one process).

    ``local_batch`` is an array or ``(x, context)`` (:mod:`jflows.training.batches`); every
    array is split over the mesh the same way, so each device holds the contexts of its rows.
    """
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local_batch
    )


def place(array, sharding: NamedSharding) -> jax.Array:
    """Places a host array that every process holds in full according to ``sharding``."""
    host = np.asarray(array)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(tree):
    """Copies a (replicated) state to host numpy arrays, e.g. before single-process work."""
    return jax.tree.map(np.asarray, tree)


def initialize_distributed(coordinator: str, num_processes: int, process_id: int) -> None:
    """Joins a multi-process JAX run (one call per process, before anything else uses JAX).

    On CPU the collectives go through gloo. After it, ``jax.devices()`` lists the devices of
    every process and :func:`make_mesh` spans them; each process feeds its share of every batch
    (or the whole pool, replicated) and runs the same program.

    Example (on each of two hosts, ``rank`` 0 and 1; not run here)::

        initialize_distributed("10.0.0.1:4321", num_processes=2, process_id=rank)
        mesh = make_mesh()  # all devices of both hosts
    """
    # CPU collectives across processes (no effect on GPU/TPU); must precede backend start-up
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
