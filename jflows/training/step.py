"""The jitted training and evaluation steps, for one device or many: one builder each.

``make_train_step`` returns a pure function ``(state, batch, key) -> (state, metrics)``: the
mean negative log-likelihood (nats per example) of the batch, its gradient with respect to the
parameters, and an optax update. A step whose loss or gradient is not finite is skipped inside
the compiled function (no host synchronisation): parameters, optimiser state and collections
stay exactly as they were and ``nonfinite_steps`` is incremented.

**A single device is a one-device mesh.** Every builder (:func:`make_train_step`,
:func:`make_eval_step`, :func:`make_lipschitz_refresh`) takes an optional one-axis
:class:`~jax.sharding.Mesh` (:func:`jflows.training.parallel.make_mesh`) and compiles the same
function under ``jax.jit`` with the state and key replicated and the batch split over the
mesh's ``"data"`` axis (``NamedSharding``); XLA inserts the gradient all-reduce. ``mesh=None``
means the one-device mesh of the first device, so one device and ``n`` devices run the same
code. JAX's partitionable threefry RNG draws the same bits whatever the sharding, so the
``n``-device step equals the one-device step draw for draw (up to the rounding of differently
ordered sums). ``jax.pmap`` is an alternative (:mod:`jflows.training.pmap`).

Example:
    >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
    >>> x = jax.random.normal(key, (64, 2))
    >>> state = jflows.training.create_train_state(flow, optax.sgd(0.1), x, key)
    >>> mesh = make_mesh(1)  # what mesh=None means; make_mesh(4) for four devices
    >>> step = make_train_step(flow, optax.sgd(0.1), mesh)
    >>> state, metrics = step(state, x, jax.random.key(1))
    >>> make_eval_step(flow, mesh)(state, x, key).shape
    (64,)
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jflows.errors import ConfigError
from jflows.names import LIPSCHITZ
from jflows.training.batches import as_args
from jflows.training.guarded import apply_for_eval, apply_with_collections, guarded_update
from jflows.training.parallel import batch_sharding, make_mesh, replicated_sharding
from jflows.training.state import TrainState, stream_keys
from jflows.training.trace_cache import cached_jit

TrainStep = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]
EvalStep = Callable[[TrainState, jax.Array, jax.Array], jax.Array]


def _rngs(model, key, axis_name: str | None = None):
    """The step's RNG dict; under ``pmap`` every replica folds in its index (own draws)."""
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    return stream_keys(model, key)


def _jit_on_mesh(fn, mesh: Mesh | None, out_shardings, donate_argnums=(), *, name, parts):
    """``fn(state, batch, key)`` under ``jit``: state and key replicated, batch split over mesh.

    ``out_shardings`` maps the replicated sharding to the outputs' shardings. ``name`` and
    ``parts`` (what defines ``fn``) key its entry in the trace cache
    (:mod:`jflows.training.trace_cache`): a restart of the same model skips tracing.
    """
    mesh = make_mesh(1) if mesh is None else mesh
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    return cached_jit(
        fn,
        name=name,
        parts=parts,
        in_shardings=(rep, data, rep),
        out_shardings=out_shardings(rep),
        donate_argnums=donate_argnums,
    )


def train_step_fn(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    axis_name: str | None = None,
) -> TrainStep:
    """The pure (un-jitted) training step behind :func:`make_train_step` and the pmap step.

    With ``axis_name`` the function is meant to run under ``jax.pmap`` over that axis: the
    loss and gradients are averaged over replicas with ``lax.pmean`` (equal local batches),
    so every replica applies the same update. See :func:`make_train_step` for the rest.
    """

    def reduce(value):
        return value if axis_name is None else jax.lax.pmean(value, axis_name)

    def step(state: TrainState, batch: jax.Array, key: jax.Array):
        args, rngs = as_args(batch), _rngs(model, key, axis_name)  # (x,) or (x, context)

        def loss_fn(params):
            log_prob, collections = apply_with_collections(
                model, state, params, *args, method="log_prob", rngs=rngs
            )
            return -jnp.mean(log_prob), collections

        (loss, collections), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        loss, grads = reduce(loss), reduce(grads)
        new_state, finite = guarded_update(state, optimizer, loss, grads, collections)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite}
        return new_state, metrics

    return step


def make_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    mesh: Mesh | None = None,
) -> TrainStep:
    """Builds the jitted training step of ``model`` (the state argument is donated).

    The loss is ``-mean(log_prob(x))`` in nats (a bound's, for models with stochastic layers
    such as the dequantization of image models, which take the integer levels themselves).
    Every RNG stream the model declares is derived from ``key``
    (:func:`~jflows.training.state.stream_keys`). When the state has non-parameter collections
    (``lipschitz``), the model is applied with them mutable, so spectrally normalised layers
    refresh their power iteration once per step, and the refreshed values are kept
    (``constants``, e.g. Glow's fixed LU factors, are read only). A step whose loss or
    gradients are not finite leaves the state unchanged except for ``nonfinite_steps``.

    Args:
        model: the training-mode model (e.g. a residual flow with its training estimator).
        optimizer: the optax transformation the state was created with.
        mesh: a one-axis mesh (:func:`~jflows.training.parallel.make_mesh`): the state and key
            are replicated on it and the batch (whose size the mesh's device count must
            divide) is split over it. None: the one-device mesh of the first device.

    Returns:
        ``step(state, batch, key) -> (state, metrics)`` with ``metrics`` a dict of replicated
        scalars: ``loss`` (mean NLL in nats), ``grad_norm`` (global norm of the gradient) and
        ``finite`` (False when the step was skipped).

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = jax.random.normal(key, (64, 2))
        >>> state = jflows.training.create_train_state(flow, optax.adam(1e-3), x, key)
        >>> step = make_train_step(flow, optax.adam(1e-3))
        >>> state, metrics = step(state, x, jax.random.key(1))
        >>> int(state.step), bool(metrics["finite"])
        (1, True)
    """
    fn = train_step_fn(model, optimizer)
    return _jit_on_mesh(fn, mesh, lambda rep: (rep, rep), donate_argnums=0,
                        name="train_step", parts=(model, optimizer))


def eval_step_fn(
    model: nn.Module, samples: int = 1, *, axis_name: str | None = None
) -> EvalStep:
    """The pure (un-jitted) per-example NLL behind :func:`make_eval_step` and the pmap step.

    With ``axis_name`` (under ``jax.pmap``) every replica folds its index into the key, so
    each replica's stochastic layers draw their own noise, as in :func:`train_step_fn`.
    """
    if samples != 1:
        check_iw_samples(model, samples)

    def score(module, x, *context):
        return module.log_prob(x, *context) if samples == 1 else module.iwbo(x, samples, *context)

    def eval_step(state: TrainState, batch: jax.Array, key: jax.Array) -> jax.Array:
        args, rngs = as_args(batch), _rngs(model, key, axis_name)  # (x,) or (x, context)
        return -apply_for_eval(model, state, *args, method=score, rngs=rngs)

    return eval_step


def check_iw_samples(model: nn.Module, samples: int) -> None:
    """Raises ConfigError unless ``samples`` is a positive int and ``model`` has ``iwbo``."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"importance samples must be an int >= 1, got {samples!r}")
    if not hasattr(model, "iwbo"):
        raise ConfigError(
            f"{type(model).__name__} has no iwbo method; importance-weighted evaluation "
            "(samples > 1) needs a jflows.models.Flow"
        )


def make_eval_step(model: nn.Module, mesh: Mesh | None = None, samples: int = 1) -> EvalStep:
    """Builds the jitted per-example NLL of ``model`` (nats), without changing the state.

    With a ``lipschitz`` collection the model is applied with it mutable, so the spectral
    normalisation is refreshed for the current weights; the refreshed vectors are discarded.
    The model's stochastic parts (dequantization noise, log-det estimators) draw from
    streams derived from ``key``; pass a fixed key to get a deterministic evaluation.

    Args:
        model: the evaluation-mode model (built with ``training=False``); it shares the
            training model's parameters.
        mesh: as for :func:`make_train_step`; the batch is split over it.
        samples: ``K`` importance samples per example: the NLL is then the negative IWBO
            (:meth:`jflows.models.Flow.iwbo`; ``K`` copies of the batch in one call), a
            tighter bound than the one-draw ELBO for models with stochastic layers.

    Returns:
        ``eval_step(state, batch, key) -> nll`` with ``nll`` of shape ``(batch_size,)``,
        replicated on the mesh (every process can read it).

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = jax.random.normal(key, (500, 2))
        >>> state = jflows.training.create_train_state(flow, optax.adam(1e-3), x, key)
        >>> nll = make_eval_step(flow)(state, x, jax.random.key(0))
        >>> nll.shape
        (500,)
    """
    return _jit_on_mesh(eval_step_fn(model, samples), mesh, lambda rep: rep,
                        name="eval_step", parts=(model, samples))


def lipschitz_refresh_fn(model: nn.Module):
    """The un-jitted ``refresh(state, batch, key) -> state`` (see make_lipschitz_refresh)."""

    def refresh(state: TrainState, batch: jax.Array, key: jax.Array) -> TrainState:
        if LIPSCHITZ not in state.collections:
            return state
        args, rngs = as_args(batch), _rngs(model, key)
        _, updated = model.apply(
            state.variables(), *args, method="log_prob", rngs=rngs, mutable=[LIPSCHITZ]
        )
        return state.replace(collections={**state.collections, **updated})

    return refresh


def make_lipschitz_refresh(model: nn.Module, mesh: Mesh | None = None):
    """Builds a jitted ``refresh(state, batch, key) -> state`` for spectrally normalised layers.

    The training step refreshes the power-iteration vectors inside its forward pass, for the
    weights it is about to use; after the optimizer update the stored vectors are one step
    behind the new weights. ``refresh`` runs the model's forward pass with the ``lipschitz``
    collection mutable and keeps the result (what Residual Flows' ``update_lipschitz`` does
    before validation), so a state that is saved, evaluated or sampled from is normalised with
    vectors that match its own weights. Pass the evaluation model (``training=False``), whose
    layers run 100 power iterations per refresh. States without that collection are returned
    unchanged. ``mesh`` is as for :func:`make_train_step`.

    Example:
        >>> flow = jflows.models.resflow((2,), n_blocks=1, hidden=(8,), logdet="exact")
        >>> eval_flow = jflows.models.resflow(
        ...     (2,), n_blocks=1, hidden=(8,), logdet="exact", training=False)
        >>> x = jax.random.normal(key, (64, 2))
        >>> state = jflows.training.create_train_state(flow, optax.adam(1e-3), x, key)
        >>> state = make_lipschitz_refresh(eval_flow)(state, x, jax.random.key(0))
        >>> sorted(state.collections)
        ['lipschitz']
    """
    return _jit_on_mesh(lipschitz_refresh_fn(model), mesh, lambda rep: rep,
                        name="lipschitz_refresh", parts=(model,))
