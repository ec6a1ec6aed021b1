"""The training state: parameters, other variable collections, optimiser state and counters."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jflows.models.evaluate import stream_keys  # noqa: F401 (re-exported)
from jflows.names import DIAGNOSTICS, PARAMS
from jflows.training.parallel import make_mesh, replicated_sharding
from jflows.training.trace_cache import cached_jit

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
    """Everything a training step reads and writes, as one pytree.

    Attributes:
        step: number of steps taken so far (int32 scalar), skipped ones included.
        params: the ``params`` collection of the model.
        collections: every other variable collection of the model, e.g.
            ``{LIPSCHITZ: ...}`` for spectrally normalised layers; ``{}`` for coupling flows.
        opt_state: the optax state of ``params``.
        nonfinite_steps: number of steps whose loss or gradient was not finite and that were
            therefore skipped (int32 scalar).

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
        >>> state = create_train_state(flow, optax.adam(1e-3), x, jax.random.key(0))
        >>> int(state.step), int(state.nonfinite_steps)
        (0, 0)
    """

    step: jax.Array
    params: PyTree
    collections: dict[str, PyTree]
    opt_state: PyTree
    nonfinite_steps: jax.Array

    def variables(self) -> dict[str, PyTree]:
        """The model's variables, ready for ``model.apply``."""
        return {PARAMS: self.params, **self.collections}


def strong(tree: PyTree) -> PyTree:
    """Copies every array leaf of ``tree`` with a strong (not weak) dtype.

    A weakly typed leaf (e.g. from a Python float) changes type after the first update, which
    makes ``jax.jit`` compile the training step a second time.
    """

    def fix(leaf):
        if isinstance(leaf, jax.Array | float | int) and not isinstance(leaf, bool):
            arr = jnp.asarray(leaf)
            return jnp.array(arr, dtype=arr.dtype) if arr.weak_type else arr
        return leaf

    return jax.tree_util.tree_map(fix, tree)


def init_rngs(model: nn.Module, key: jax.Array) -> dict[str, jax.Array]:
    """``params`` plus one key per RNG stream the model declares, split from ``key``."""
    params_key, stream_key = jax.random.split(key)
    return {PARAMS: params_key, **stream_keys(model, stream_key)}


def create_train_state(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    init_batch,
    key: jax.Array,
    mesh: Mesh | None = None,
) -> TrainState:
    """Initialises a model on a real data batch and wraps it in a :class:`TrainState`.

    ``model.init`` runs ``log_prob`` on ``init_batch``, which performs every data-dependent
    initialisation (ActNorm); pass a representative batch (a few hundred rows), not zeros.
    Per-call ``diagnostics`` sown during ``init`` are not part of the state.

    Args:
        model: a :class:`jflows.models.Flow` (or any module with a ``log_prob`` method).
        optimizer: an optax transformation.
        init_batch: a batch of data as the model takes it (integer levels for image models,
            whose first layer dequantizes), or ``(x, context)`` for a conditional model.
        key: a PRNG key; it gives ``params`` and every stream the model declares.
        mesh: the one-axis mesh the state is replicated on (what the step builders of
            :mod:`jflows.training.step` take); None: the one-device mesh of the first device.
            ``init`` runs under ``jit`` with the whole batch on every device (with several
            processes, pass a global array, e.g. from
            :func:`~jflows.training.parallel.place`).

    Returns:
        A state at step 0 whose leaves are all strongly typed, replicated on the mesh.

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
        >>> state = create_train_state(flow, optax.adam(1e-3), x, jax.random.key(0))
        >>> sorted(state.params)
        ['bijector']
    """
    rep = replicated_sharding(make_mesh(1) if mesh is None else mesh)

    def create(rngs, batch):
        args = tuple(batch) if isinstance(batch, tuple | list) else (batch,)  # (x, context)
        variables = model.init(rngs, *args, method="log_prob")
        variables = strong({k: v for k, v in variables.items() if k != DIAGNOSTICS})
        params = variables.pop(PARAMS)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            collections=variables,
            opt_state=strong(optimizer.init(params)),
            nonfinite_steps=jnp.zeros((), jnp.int32),
        )

    # jit: an eager init of a deep flow dispatches thousands of small ops one by one; the
    # state comes out where the steps expect it, so their first call does not compile twice
    batch = jax.tree.map(jnp.asarray, init_batch)
    init = cached_jit(create, name="init", parts=(model, optimizer), out_shardings=rep)
    return init(init_rngs(model, key), batch)
