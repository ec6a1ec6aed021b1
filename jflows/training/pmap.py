"""``jax.pmap`` data parallelism: an alternative to the mesh-sharded ``jit`` step.

:func:`jflows.training.make_train_step` with a mesh is the one path ``fit`` uses, on one device
or many (see :mod:`jflows.training.parallel`). This module offers the same training step under
``jax.pmap`` for users of that API: the state carries a leading replica axis
(:func:`replicate_for_pmap`), the batch (an array, or ``(x, context)`` for a conditional
model) is split into ``(n_devices, batch / n_devices, ...)`` (:func:`split_for_pmap`), the key
is shared, and the loss and gradients are averaged over replicas with ``lax.pmean``, so every
replica applies the same update.

Randomness differs from the ``jit`` step: every replica folds its index into the step key
before deriving its streams, so each replica draws its own dequantization noise, Hutchinson
probes and roulette length (as PyTorch's DataParallel replicas do in the Residual Flows code).
The result equals the one-device step in distribution, and draw for draw only for models that
draw nothing. ActNorm's initialisation runs once on the global batch
(:func:`jflows.training.create_train_state`) before the state is replicated.

Example:
    >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
    >>> x = np.asarray(jax.random.normal(key, (64, 2)))
    >>> opt = optax.sgd(0.1)
    >>> n = jax.local_device_count()
    >>> state = replicate_for_pmap(jflows.training.create_train_state(flow, opt, x, key))
    >>> step = make_pmap_train_step(flow, opt)
    >>> state, metrics = step(state, split_for_pmap(x, n), jax.random.key(1))
    >>> int(unreplicate(state).step), metrics["loss"].shape == (n,)
    (1, True)
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
from jflows.training.batches import n_rows
from jflows.training.parallel import DATA_AXIS
from jflows.training.step import EvalStep, TrainStep, eval_step_fn, train_step_fn


def make_pmap_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> TrainStep:
    """The training step under ``jax.pmap`` (``lax.pmean`` of loss and gradients).

    The state argument is donated; metrics come back per replica (all equal). See the
    module's description for the layout and the per-replica randomness.

    Args:
        model: the training-mode model.
        optimizer: the optax transformation the state was created with.
        devices: the devices to map over (default: every local device).
    """
    fn = train_step_fn(model, optimizer, axis_name=DATA_AXIS)
    return jax.pmap(
        fn, axis_name=DATA_AXIS, in_axes=(0, 0, None), donate_argnums=0, devices=devices
    )


def make_pmap_eval_step(
    model: nn.Module, *, samples: int = 1, devices: Sequence[jax.Device] | None = None
) -> EvalStep:
    """The per-example NLL under ``jax.pmap``: ``(state, (n, B / n, ...), key) -> (n, B / n)``.

    As :func:`jflows.training.make_eval_step` (``samples``: importance samples, IWBO), with
    the state replicated (:func:`replicate_for_pmap`) and the batch split
    (:func:`split_for_pmap`); every replica folds its index into the key, so the stochastic
    layers of different replicas draw different noise even for identical rows.

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = np.asarray(jax.random.normal(key, (64, 2)))
        >>> state = jflows.training.create_train_state(flow, optax.sgd(0.1), x, key)
        >>> n = jax.local_device_count()
        >>> step = make_pmap_eval_step(flow)
        >>> nll = step(replicate_for_pmap(state), split_for_pmap(x, n), key)
        >>> nll.shape == (n, 64 // n)
        True
    """
    fn = eval_step_fn(model, samples, axis_name=DATA_AXIS)
    return jax.pmap(fn, axis_name=DATA_AXIS, in_axes=(0, 0, None), devices=devices)


def replicate_for_pmap(tree, devices: Sequence[jax.Device] | None = None):
    """Stacks one copy of ``tree`` per device (the layout ``pmap`` expects)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    sharding = NamedSharding(Mesh(np.asarray(devices), (DATA_AXIS,)), P(DATA_AXIS))

    def stack(leaf):
        host = np.asarray(leaf)
        return jax.device_put(np.broadcast_to(host, (len(devices), *host.shape)), sharding)

    return jax.tree.map(stack, tree)


def split_for_pmap(batch, n_devices: int | None = None):
    """``(B, ...) -> (n, B / n, ...)`` for ``pmap``, for every array of ``(x, context)`` alike.

    Example:
        >>> x, c = split_for_pmap((np.zeros((8, 2)), np.ones((8, 1))), 2)
        >>> x.shape, c.shape
        ((2, 4, 2), (2, 4, 1))
    """
    n = n_devices or jax.local_device_count()
    size = n_rows(batch)
    if size % n:
        raise ConfigError(
            f"batch size {size} does not split over {n} devices; use a multiple of {n}"
        )
    return jax.tree.map(lambda a: np.asarray(a).reshape(n, size // n, *a.shape[1:]), batch)


def unreplicate(tree):
    """The first replica of a ``pmap``-replicated tree."""
    return jax.tree.map(lambda a: a[0], tree)
