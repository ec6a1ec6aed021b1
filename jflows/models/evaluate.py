r"""Batched likelihoods of large arrays: one compiled ``log_prob`` per batch shape.

:func:`evaluate_log_prob` scores ``n`` rows ``batch_size`` at a time. Every batch has the same
shape (the last, partial one is padded with copies of the first row, whose results are
dropped), so the jitted function compiles once whatever ``n`` is; the batches are dispatched
without waiting for each other and the results stay on the device until one transfer at the
end. Batch ``b`` draws its randomness (dequantization noise, stochastic log-dets) from
``fold_in(key, b)`` split into the model's streams by :func:`stream_keys`, exactly as
:func:`jflows.training.evaluate_nll` does, so the two agree given the same key.

:func:`stream_rows` is that loop for any per-batch function; the training layer's
``evaluate_nll`` runs on it too. Rows are an array ``x`` or a pair ``(x, context)``.
"""

from __future__ import annotations

import collections
import zlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jflows.errors import ConfigError, MissingRngError, ShapeError
from jflows.names import SAMPLE

Rows = Any
"""An array, or a tuple of arrays with the same number of rows (``(x, context)``)."""

_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 16


def stream_keys(model: nn.Module, key: jax.Array) -> dict[str, jax.Array]:
    """One key per RNG stream the model declares (``model.rng_streams``), derived from ``key``.

    Each stream's key is ``fold_in(key, crc32(name))``, so a stream's draws do not change when
    a model gains or loses another stream. A module without declarations gets no streams.

    Example:
        >>> flow = jflows.models.resflow((2,), n_blocks=1, hidden=(8,))
        >>> sorted(stream_keys(flow, jax.random.key(0)))
        ['logdet', 'sample']
    """
    streams = sorted(getattr(model, "rng_streams", ()))
    return {name: jax.random.fold_in(key, zlib.crc32(name.encode())) for name in streams}


def n_rows(rows: Rows) -> int:
    """The number of rows (the first axis of the first array)."""
    return int(jax.tree.leaves(rows)[0].shape[0])


def take(rows: Rows, index) -> Rows:
    """The rows at ``index`` (an index array or a slice) of every array."""
    return jax.tree.map(lambda a: a[index], rows)


def pad_rows(rows: Rows, size: int) -> Rows:
    """``rows`` padded to ``size`` rows with copies of the first (host arrays)."""
    missing = size - n_rows(rows)
    if missing <= 0:
        return rows
    return jax.tree.map(
        lambda a: np.concatenate([a, np.repeat(a[:1], missing, axis=0)]), rows
    )


def stream_rows(
    fn: Callable[[Rows, int], jax.Array], rows: Rows, batch_size: int
) -> np.ndarray:
    """``fn(batch, b)`` over consecutive batches of ``batch_size`` rows, concatenated on the host.

    The last batch is padded to ``batch_size`` rows (:func:`pad_rows`) and its padding
    dropped from the result. ``fn`` should return a device array without waiting for it: the
    results are fetched in one ``jax.device_get`` after every batch has been dispatched.

    Example:
        >>> stream_rows(lambda batch, b: batch.sum(axis=1) + 10 * b, np.ones((5, 2)), 2)
        array([ 2.,  2., 12., 12., 22.])
    """
    n, results = n_rows(rows), []
    for b, start in enumerate(range(0, n, batch_size)):
        batch = take(rows, slice(start, start + batch_size))
        results.append((fn(pad_rows(batch, batch_size), b), n_rows(batch)))
    host = jax.device_get([out for out, _ in results])
    return np.concatenate([out[:real] for out, (_, real) in zip(host, results)])


def _compiled(flow: nn.Module, needs_key: bool) -> Callable:
    """The jitted ``(variables, rows, b, key) -> log_prob`` of ``flow``, cached per flow."""
    cache_key = (id(flow), needs_key)
    hit = _CACHE.get(cache_key)
    if hit is not None and hit[0] is flow:
        _CACHE.move_to_end(cache_key)
        return hit[1]

    def run(variables, rows, b, key):
        args = rows if isinstance(rows, tuple) else (rows,)
        rngs = stream_keys(flow, jax.random.fold_in(key, b)) if needs_key else {}
        return flow.apply(variables, *args, method="log_prob", rngs=rngs)

    fn = jax.jit(run)
    _CACHE[cache_key] = (flow, fn)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return fn


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or (
        batch_size < 1
    ):
        raise ConfigError(
            f"batch_size must be an int >= 1 (rows per compiled call), got {batch_size!r}; "
            "pass e.g. batch_size=1000 (larger is faster until memory runs out)"
        )
    return int(batch_size)


def _check_x(flow: nn.Module, x: Any) -> np.ndarray:
    x = np.asarray(x)
    event = tuple(getattr(flow, "event_shape", x.shape[1:]))
    if x.ndim != len(event) + 1 or tuple(x.shape[1:]) != event:
        raise ShapeError(
            f"evaluate_log_prob expects x of shape (n, *event_shape) = (n, "
            f"{', '.join(map(str, event))}{',' if len(event) == 1 else ''}), got {x.shape}; "
            "give one row per event (reshape a single event with x[None])"
        )
    return x


def _check_context(flow: nn.Module, context: Any, n: int) -> np.ndarray | None:
    conditional = bool(getattr(flow, "conditional", context is not None))
    if context is None:
        if conditional:
            raise ShapeError(
                "this flow is conditional (it reads a context), but context=None; pass "
                "context= with one row per row of x"
            )
        return None
    if not conditional:
        raise ShapeError(
            "this flow has no conditional layer, so a context would be ignored; drop "
            "context=... or build a conditional model"
        )
    context = np.asarray(context)
    shape = getattr(flow, "context_shape", None)
    if shape is not None and context.shape == tuple(shape):
        context = np.broadcast_to(context, (n, *context.shape))  # one context for every row
    if context.ndim == 0 or context.shape[0] != n:
        raise ShapeError(
            f"context has {context.shape[0] if context.ndim else 0} rows (shape "
            f"{context.shape}) but x has {n}; give one context row per row of x, or a single "
            f"context of shape context_shape={shape}"
        )
    return context


def evaluate_log_prob(
    flow: nn.Module,
    variables: dict,
    x: Any,
    batch_size: int = 1000,
    context: Any = None,
    key: jax.Array | None = None,
) -> np.ndarray:
    r"""``log p(x_i | context_i)`` of every row of a large array, ``batch_size`` rows at a time.

    Runs one jitted ``flow.log_prob`` per batch. Every call has the same shape: the last,
    partial batch is padded with copies of the first row and the padding is dropped, so the
    function compiles once for any number of rows (and again only for a new ``batch_size``,
    dtype or flow). Batches are dispatched back to back and their results stay on the device
    until one transfer at the end (no host synchronisation per batch). The ``lipschitz``
    vectors of spectrally normalised layers are used as stored in ``variables`` (not
    refreshed), as by ``flow.apply(variables, x, method="log_prob")``.

    Args:
        flow: a :class:`~jflows.models.Flow` (or any module with ``log_prob``); for residual
            flows, the evaluation-mode model (``training=False``).
        variables: its variables, as returned by ``flow.init`` or ``state.variables()`` of a
            :class:`~jflows.training.TrainState` (``params`` plus ``lipschitz`` and the like).
        x: ``(n, *event_shape)`` rows (a numpy array; a JAX array is copied to the host once).
            Image models that dequantize take the integer levels.
        batch_size: rows per compiled call; memory grows with it.
        context: for a conditional flow, ``(n, *context_shape)`` rows (or one context of
            shape ``context_shape`` for every row).
        key: randomness of models that draw (dequantization, stochastic log-dets): batch
            ``b`` uses ``fold_in(key, b)``, so the result is deterministic given ``key``.
            Required for such models; ignored by deterministic ones.

    Returns:
        A numpy array of shape ``(n,)`` in the model's dtype: the log-densities in nats (or
        the estimates or bounds that ``log_prob`` returns, see ``flow.estimate``).

    Raises:
        ConfigError: ``batch_size`` is not an int >= 1.
        ShapeError: ``x`` is not ``(n, *event_shape)``, or ``context`` is missing, not needed,
            or has another number of rows than ``x``.
        MissingRngError: the flow draws randomness and ``key`` is None.

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = np.random.default_rng(0).normal(size=(2500, 2)).astype(np.float32)
        >>> variables = flow.init(key, x[:100], method="log_prob")
        >>> lp = jflows.evaluate_log_prob(flow, variables, x, batch_size=1000)  # 3 calls
        >>> lp.shape, bool(np.allclose(lp, flow.apply(variables, x, method="log_prob"),
        ...                                  atol=1e-5))
        ((2500,), True)
    """
    batch_size = _check_batch_size(batch_size)
    x = _check_x(flow, x)
    context = _check_context(flow, context, len(x))
    streams = sorted(set(getattr(flow, "rng_streams", ())) - {SAMPLE})
    if streams and key is None:
        err = MissingRngError(streams[0], "evaluate_log_prob")
        err.args = (
            f"this flow draws from the RNG streams {streams} in log_prob, but key=None; pass "
            "key=jax.random.key(0) (any fixed key gives a deterministic evaluation)",
        )
        raise err
    if len(x) == 0:
        return np.zeros((0,), getattr(flow, "dtype", None) or np.float32)
    fn = _compiled(flow, bool(streams))
    rows = x if context is None else (x, context)
    key = key if streams else None
    return stream_rows(lambda batch, b: fn(variables, batch, np.int32(b), key), rows, batch_size)
