"""Shape helpers shared by kernels and modules: batch shapes, event sums, flattening."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jflows.errors import ShapeError


def batch_shape(x: jax.Array, event_ndims: int) -> tuple[int, ...]:
    """Returns the leading (batch) axes of ``x`` for events of rank ``event_ndims``."""
    if x.ndim < event_ndims:
        raise ShapeError(
            f"expected an array with at least {event_ndims} event axes, got shape {x.shape}; "
            f"pass one event of rank {event_ndims} or a batch of them"
        )
    return tuple(x.shape[: x.ndim - event_ndims])


def sum_event(x: jax.Array, event_ndims: int) -> jax.Array:
    """Sums the last ``event_ndims`` axes, leaving the batch shape."""
    if event_ndims == 0:
        return x
    return jnp.sum(x, axis=tuple(range(x.ndim - event_ndims, x.ndim)))


def zeros_logdet(x: jax.Array, event_ndims: int) -> jax.Array:
    """A zero log-determinant with the batch shape of ``x``."""
    return jnp.zeros(batch_shape(x, event_ndims), dtype=x.dtype)


def event_size(x: jax.Array, event_ndims: int) -> int:
    """Number of scalars in one event."""
    return math.prod(x.shape[x.ndim - event_ndims :])


def check_event_shape(x: jax.Array, event_shape: tuple[int, ...], where: str) -> None:
    """Raises ShapeError unless the trailing axes of ``x`` equal ``event_shape``."""
    n = len(event_shape)
    if x.ndim < n or tuple(x.shape[x.ndim - n :]) != tuple(event_shape):
        raise ShapeError(
            f"{where} expects events of shape {tuple(event_shape)} (with any leading batch axes), "
            f"got an array of shape {tuple(x.shape)}"
        )


def apply_flat_batch(
    fn: Callable[[jax.Array], jax.Array], x: jax.Array, event_ndims: int
) -> jax.Array:
    """Applies ``fn`` to ``x`` reshaped to exactly one batch axis, then restores the batch axes.

    ``fn`` maps ``(n, *event_in)`` to ``(n, *event_out)``. Any number of leading batch axes,
    including none, is supported.
    """
    lead = batch_shape(x, event_ndims)
    flat = x.reshape((-1, *x.shape[x.ndim - event_ndims :]))
    out = fn(flat)
    return out.reshape((*lead, *out.shape[1:]))
