"""The runner of every JAX stack (jflows, flowjax, distrax+flax, hand-written JAX, floors).

A stack's builder returns a :class:`JaxModel`: a state (any pytree) and a step
``(state, batch, key) -> (state, loss)``; :func:`run` times the steps on the task's batches
with one key per step and scores the final state. :func:`jflows_model` builds the model of a
jflows flow with the library's own train and evaluation steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks.harness import common


def _same(value):
    return value


@dataclasses.dataclass(frozen=True)
class JaxModel:
    """What :func:`run` trains.

    Attributes:
        state: the initial training state (any pytree).
        step: ``(state, batch, key) -> (state, loss)``, jitted by the stack.
        test: the test score of a state (a float, or None for no score).
        params: the trainable parameters of a state (counted in the table).
        loss_to: the train loss as the table shows it (e.g. nats to bits/dim).
        is_loss: whether the step's value is a training loss (False for a floor that times a
            bare forward and backward pass: the table then shows "-").
    """

    state: Any
    step: Callable[[Any, Any, jax.Array], tuple[Any, Any]]
    test: Callable[[Any], float | None]
    params: Callable[[Any], Any] = _same
    loss_to: Callable[[float], float] = _same
    is_loss: bool = True


def run(build: Callable[..., JaxModel], task) -> dict:
    """Builds the stack's model (timed as setup), trains it on ``task``'s batches, scores it."""
    keys = common.step_keys(task.steps, task.seed)
    start = time.perf_counter()
    model = build(task)
    jax.block_until_ready(model.state)
    setup_s = time.perf_counter() - start
    state = model.state

    def one(i: int) -> float:
        nonlocal state
        state, loss = model.step(state, task.train[task.idx[i]], keys[i])
        return model.loss_to(float(loss))

    times, losses = common.train_loop(one, task.steps)
    params = common.count_params(model.params(state))
    result = common.summary(times, losses, setup_s=setup_s, params=params)
    result["test"] = model.test(state)
    if not model.is_loss:
        result["loss_end"] = None
    return result


def jflows_model(task, flow, *, eval_flow=None, init=None) -> JaxModel:
    """A jflows flow trained by ``make_train_step`` with Adam at ``task.lr``.

    ``init(state, optimizer)`` may replace the initial state (W1's shared weights);
    ``eval_flow`` is the flow evaluated on the test set (default ``flow``). The model's
    ``test(state, x=task.test)`` is the mean test NLL in nats (one batch of ``len(x)`` rows).
    """
    import optax

    from jflows.training import create_train_state, evaluate_nll, make_eval_step, make_train_step

    opt = optax.adam(task.lr)
    first = task.train[task.idx[0]]
    state = create_train_state(flow, opt, first, jax.random.key(task.seed))
    if init is not None:
        state = init(state, opt)
    train_step = make_train_step(flow, opt)
    eval_step = make_eval_step(flow if eval_flow is None else eval_flow)

    def step(state, x, key):
        state, metrics = train_step(state, x, key)
        return state, metrics["loss"]

    def test_nll(state, x=task.test) -> float:
        return float(np.mean(evaluate_nll(eval_step, state, x, len(x))))

    return JaxModel(state=state, step=step, test=test_nll, params=lambda s: s.params)


def digits_draws_model(task, make_flow: Callable, bits: Callable, *, init=None,
                       **preprocessing) -> JaxModel:
    """A jflows image flow trained on digit levels and tested on the fixed draws ``k + u``.

    The training flow dequantizes the levels itself (the first layer of
    ``image_preprocessing(levels, **preprocessing)``, ``UniformDequantization``); the test
    flow swaps that layer for an identity without parameters, so it reads the draws in
    ``task.test`` (one array per draw, as normflows is tested) and shares the trained
    parameters. ``make_flow(preprocessing, training)`` builds either flow; ``bits`` maps a
    mean NLL in level units to bits/dim, the figure the model reports (loss and test).
    """
    from jflows import models as jm
    from jflows.bijectors import FixedAffine, UniformDequantization

    prep = list(jm.image_preprocessing(common.DIGITS_LEVELS, **preprocessing))
    if not isinstance(prep[0], UniformDequantization):
        raise SystemExit(f"expected UniformDequantization first in image_preprocessing: {prep}")
    test_prep = [FixedAffine(scale=1.0, event_ndims=3), *prep[1:]]
    model = jflows_model(task, make_flow(prep, True), eval_flow=make_flow(test_prep, False),
                         init=init)
    return dataclasses.replace(
        model,
        test=lambda state: bits(np.mean([model.test(state, d) for d in task.test])),
        loss_to=bits,
    )


def load_shared_weights(state, values: dict, optimizer, *, skip_missing: bool = False):
    """``state`` with the shared initial weights ``values`` and a fresh optimiser state.

    ``values`` maps the last key of a parameter's path (``("kernel_0",)``), or the last two for
    a ``lipschitz`` power-iteration vector (``("layer_0", "u")``), to its array, stacked over
    the blocks of a ``Stack``. Leaves without an entry keep their value if ``skip_missing``
    (e.g. ActNorm's data-dependent initialisation), else stop the run. The result is placed
    like ``state``: an eagerly built leaf (Adam's count) has another type than the step's
    output, and the step would compile a second time at step 2.
    """
    import jax.numpy as jnp
    from flax import traverse_util

    from jflows.names import LIPSCHITZ
    from jflows.training.state import strong

    def replace(tree):
        flat = traverse_util.flatten_dict(tree)
        for path, old in flat.items():
            key = path[-2:] if path[-1] in ("u", "v") else path[-1:]
            if key not in values and skip_missing:
                continue
            new = values[key]
            if new.shape != old.shape:
                raise SystemExit(f"shared init: {path} has shape {old.shape}, got {new.shape}")
            flat[path] = jnp.asarray(new, old.dtype)
        return traverse_util.unflatten_dict(flat)

    params = replace(state.params)
    collections = {**state.collections, LIPSCHITZ: replace(state.collections[LIPSCHITZ])}
    new = state.replace(params=params, collections=collections,
                        opt_state=strong(optimizer.init(params)))
    return jax.device_put(new, jax.tree.map(lambda a: a.sharding, state))
