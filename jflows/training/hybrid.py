r"""Training and evaluation steps for hybrid models (:mod:`jflows.models.hybrid`).

The steps mirror :func:`jflows.training.make_train_step` and
:func:`jflows.training.make_eval_step` (the same NaN guard and handling of the ``lipschitz``
collection, shared in :mod:`jflows.training.guarded`, and the same mesh argument), but the
batch is a pair ``(x, y)`` of data and integer labels and the loss is the hybrid objective
``mean(-(log p(y|x) + lam * log p(x) / D))``.
:func:`fit_hybrid` is a small loop around them (batches drawn with replacement, one evaluation
at the end) that returns the test accuracy and NLL / bits per dimension.

Example:
    >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
    >>> model = jflows.models.hybrid(flow, 2)
    >>> x, y = jax.random.normal(key, (64, 2)), jnp.zeros((64,), jnp.int32)
    >>> state = jflows.training.create_train_state(model, optax.adam(1e-3), x, key)
    >>> step = make_hybrid_train_step(model, optax.adam(1e-3), lam=0.1)
    >>> state, metrics = step(state, (x, y), jax.random.key(1))
    >>> sorted(make_hybrid_eval_step(model)(state, (x, y), key))
    ['correct', 'nll']
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jflows.errors import ConfigError, DataError
from jflows.models.hybrid import hybrid_objective
from jflows.training.guarded import apply_for_eval, apply_with_collections, guarded_update
from jflows.training.parallel import batch_sharding, make_mesh, replicated_sharding
from jflows.training.state import TrainState, create_train_state, stream_keys
from jflows.training.step import make_lipschitz_refresh


def _jit(fn, mesh: Mesh | None, out, donate_argnums=()):
    mesh = make_mesh(1) if mesh is None else mesh
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    return jax.jit(
        fn, in_shardings=(rep, (data, data), rep), out_shardings=out(rep),
        donate_argnums=donate_argnums,
    )


def check_lambda(lam) -> float:
    """``lam`` as a float, checked to be a number >= 0 (else a ConfigError naming it)."""
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not lam >= 0:
        raise ConfigError(f"the hybrid weight lambda must be a number >= 0, got {lam!r}")
    return float(lam)


def hybrid_train_step_fn(model: nn.Module, optimizer: optax.GradientTransformation, lam: float):
    """The un-jitted ``step(state, (x, y), key) -> (state, metrics)`` of a hybrid model."""
    lam, dims = check_lambda(lam), model.dims

    def step(state: TrainState, batch, key: jax.Array):
        x, y = batch
        rngs = stream_keys(model, key)

        def loss_fn(params):
            (log_prob, logits), collections = apply_with_collections(
                model, state, params, x, method="log_prob_and_logits", rngs=rngs
            )
            loss = jnp.mean(hybrid_objective(log_prob, logits, y, lam, dims))
            accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
            return loss, (collections, -jnp.mean(log_prob), accuracy)

        (loss, (collections, nll, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        new_state, finite = guarded_update(state, optimizer, loss, grads, collections)
        metrics = {
            "loss": loss, "nll": nll, "accuracy": acc,
            "grad_norm": optax.tree.norm(grads), "finite": finite,
        }
        return new_state, metrics

    return step


def make_hybrid_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    lam: float,
    mesh: Mesh | None = None,
) -> Callable:
    r"""Builds the jitted training step of a hybrid model (the state argument is donated).

    The loss is :math:`\frac1B\sum_i -[\log p(y_i|x_i) + \lambda \log p(x_i) / D]`; ``z`` and
    ``log p(x)`` come from one pass of the flow. Non-finite steps are skipped as in
    :func:`jflows.training.make_train_step`; ``mesh`` is as there (the labels are split with
    the data).

    Returns:
        ``step(state, (x, y), key) -> (state, metrics)``; ``metrics`` holds ``loss``, ``nll``
        (mean nats), ``accuracy`` (of the batch), ``grad_norm`` and ``finite``.
    """
    fn = hybrid_train_step_fn(model, optimizer, lam)
    return _jit(fn, mesh, lambda rep: (rep, rep), donate_argnums=0)


def make_hybrid_eval_step(model: nn.Module, mesh: Mesh | None = None) -> Callable:
    """Builds the jitted per-example evaluation ``(state, (x, y), key) -> {"nll", "correct"}``.

    ``nll`` is ``-log p(x)`` in nats, ``correct`` is 1.0 where ``argmax logits == y``; both of
    shape ``(batch,)``. Pass the evaluation model (``training=False``); the state is unchanged.
    """

    def eval_step(state: TrainState, batch, key: jax.Array):
        x, y = batch
        rngs = stream_keys(model, key)
        log_prob, logits = apply_for_eval(
            model, state, x, method="log_prob_and_logits", rngs=rngs
        )
        correct = (jnp.argmax(logits, -1) == y).astype(log_prob.dtype)
        return {"nll": -log_prob, "correct": correct}

    return _jit(eval_step, mesh, lambda rep: rep)


def evaluate_hybrid(eval_step, state, x, y, batch_size: int, key: jax.Array) -> dict[str, float]:
    """Mean ``nll`` (nats), ``bits_per_dim`` and ``accuracy`` over ``(x, y)`` in batches."""
    nll, correct = [], []
    for b, start in enumerate(range(0, len(x), batch_size)):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        real = len(xb)
        if real < batch_size:  # pad to one compiled shape
            xb = np.concatenate([xb, np.repeat(xb[:1], batch_size - real, 0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], batch_size - real, 0)])
        out = eval_step(state, (xb, yb), jax.random.fold_in(key, b))
        nll.append(np.asarray(out["nll"], np.float64)[:real])
        correct.append(np.asarray(out["correct"], np.float64)[:real])
    mean_nll = float(np.concatenate(nll).mean())
    dims = math.prod(x.shape[1:])
    return {
        "nll": mean_nll,
        "bits_per_dim": mean_nll / (dims * math.log(2.0)),
        "accuracy": float(np.concatenate(correct).mean()),
    }


def check_labels(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """``y`` as int32, checked to be one integer label in ``0..n_classes-1`` per row of ``x``."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"labels must have shape ({len(x)},), one per example, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(
            f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}; "
            "pass the right number of classes"
        )
    return y.astype(np.int32)


def fit_hybrid(
    model: nn.Module,
    eval_model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    lam: float,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    eval_batch_size: int = 500,
    optimizer: optax.GradientTransformation | None = None,
) -> tuple[TrainState, dict[str, float]]:
    """Trains a hybrid model (Adam at ``lr``, or ``optimizer``) and returns ``(state, metrics)``.

    Batches are drawn with replacement from ``train`` with ``fold_in(data_key, i)``; the
    evaluation uses a fixed key. The metrics are ``test_accuracy``, ``test_nll`` and
    ``test_bits_per_dim`` (nats and bits of the flow's ``log_prob``; a bound for dequantized
    images), ``train_loss`` (last step) and ``nonfinite_steps``.

    Example:
        >>> model = jflows.models.hybrid(
        ...     jflows.models.realnvp((2,), n_couplings=2, hidden=(8,)), n_classes=2)
        >>> x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(np.int32)
        >>> state, m = fit_hybrid(model, model, (x, y), (x, y), lam=0.1, steps=5)
        >>> sorted(m)[:2]
        ['nonfinite_steps', 'test_accuracy']
    """
    x_tr, y_tr = np.asarray(train[0]), check_labels(train[0], train[1], model.n_classes)
    x_te, y_te = np.asarray(test[0]), check_labels(test[0], test[1], model.n_classes)
    optimizer = optax.adam(lr) if optimizer is None else optimizer
    init_key, data_key, step_key = jax.random.split(jax.random.key(seed), 3)
    state = create_train_state(model, optimizer, x_tr[: min(len(x_tr), 512)], init_key)
    step = make_hybrid_train_step(model, optimizer, lam)
    metrics = {}
    for i in range(steps):
        idx = np.asarray(jax.random.randint(jax.random.fold_in(data_key, i), (batch_size,), 0,
                                            len(x_tr)))
        state, metrics = step(state, (x_tr[idx], y_tr[idx]), jax.random.fold_in(step_key, i))
    # the saved state's spectral-norm vectors match its final weights (as fit's checkpoints)
    state = make_lipschitz_refresh(eval_model)(state, x_tr[:batch_size], step_key)
    ev = evaluate_hybrid(make_hybrid_eval_step(eval_model), state, x_te, y_te,
                         min(eval_batch_size, len(x_te)), jax.random.key(0))
    return state, {
        "test_accuracy": ev["accuracy"],
        "test_nll": ev["nll"],
        "test_bits_per_dim": ev["bits_per_dim"],
        "train_loss": float(metrics.get("loss", float("nan"))),
        "nonfinite_steps": int(state.nonfinite_steps),
    }
