r"""What every training and evaluation step shares, whatever its loss.

:func:`jflows.training.make_train_step` (the likelihood) and
:func:`jflows.training.hybrid.make_hybrid_train_step` (the hybrid objective) differ only in
their loss. Both apply the model with the state's collections (``lipschitz``: the
power-iteration vectors of spectrally normalised layers) mutable, keeping the refreshed values,
and both skip a step whose loss or gradient is not finite inside the compiled function, so a bad
batch never corrupts the state:

.. math::

    \theta_{t+1} = \begin{cases} \theta_t + \mathrm{update}(g_t) & \text{if } L_t, g_t
    \text{ finite} \\ \theta_t & \text{otherwise} \end{cases}

(the same for the optimizer state and the collections), with ``nonfinite_steps`` counting the
skipped ones. Evaluation steps apply the model with ``lipschitz`` mutable and discard the
refreshed vectors (:func:`apply_for_eval`).

Example:
    >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
    >>> x = jax.random.normal(key, (8, 2))
    >>> state = jflows.training.create_train_state(flow, optax.sgd(0.1), x, key)
    >>> log_prob, collections = apply_with_collections(flow, state, state.params, x,
    ...                                                method="log_prob", rngs={})
    >>> grads = jax.grad(lambda p: -apply_with_collections(
    ...     flow, state, p, x, method="log_prob", rngs={})[0].mean())(state.params)
    >>> state, finite = guarded_update(state, optax.sgd(0.1), -log_prob.mean(), grads,
    ...                                collections)
    >>> int(state.step), bool(finite)
    (1, True)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jflows.names import CONSTANTS, LIPSCHITZ, PARAMS
from jflows.training.state import TrainState


def all_finite(loss: jax.Array, grads: Any) -> jax.Array:
    """A scalar bool: ``loss`` and every leaf of ``grads`` are finite."""
    finite = jnp.isfinite(loss)
    for g in jax.tree_util.tree_leaves(grads):
        finite = jnp.logical_and(finite, jnp.all(jnp.isfinite(g)))
    return finite


def select(pred: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``pred`` holds, else ``old``, leaf by leaf (no host synchronisation)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)


def apply_with_collections(
    model: nn.Module, state: TrainState, params: Any, *args: Any, method: Any, rngs: dict
) -> tuple[Any, dict]:
    """``model.apply`` with ``params`` and the state's other collections mutable.

    ``constants`` (e.g. Glow's fixed LU factors) are read only.

    Returns:
        ``(output of method, collections)``: the state's collections with the refreshed
        values (the state's own collections, unchanged, when it has none to refresh).
    """
    mutable = sorted(c for c in state.collections if c != CONSTANTS)
    variables = {**state.variables(), PARAMS: params}
    if not mutable:
        return model.apply(variables, *args, method=method, rngs=rngs), state.collections
    out, updated = model.apply(variables, *args, method=method, rngs=rngs, mutable=mutable)
    return out, {**state.collections, **updated}


def apply_for_eval(
    model: nn.Module, state: TrainState, *args: Any, method: Any, rngs: dict
) -> Any:
    """``model.apply`` on the state's variables, ``lipschitz`` refreshed and then discarded."""
    if LIPSCHITZ not in state.collections:
        return model.apply(state.variables(), *args, method=method, rngs=rngs)
    out, _ = model.apply(state.variables(), *args, method=method, rngs=rngs,
                         mutable=[LIPSCHITZ])
    return out


def guarded_update(
    state: TrainState,
    optimizer: optax.GradientTransformation,
    loss: jax.Array,
    grads: Any,
    collections: dict,
) -> tuple[TrainState, jax.Array]:
    """One optimizer step, taken only where ``loss`` and ``grads`` are finite.

    Returns:
        ``(new state, finite)``: ``step`` is incremented either way; parameters, optimizer
        state and ``collections`` are the updated ones when ``finite``, else the state's own,
        and ``nonfinite_steps`` counts the skipped steps.
    """
    finite = all_finite(loss, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=select(finite, params, state.params),
        collections=select(finite, collections, state.collections),
        opt_state=select(finite, opt_state, state.opt_state),
        nonfinite_steps=state.nonfinite_steps + jnp.where(finite, 0, 1).astype(jnp.int32),
    )
    return new_state, finite
