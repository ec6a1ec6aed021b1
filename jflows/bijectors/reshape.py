"""Reshaping one event (e.g. flattening an image for a fully connected flow)."""

from __future__ import annotations

import math

import jax

from jflows.bijectors.base import Bijector
from jflows.errors import ShapeError
from jflows.kernels.shapes import check_event_shape, zeros_logdet


class Reshape(Bijector):
    """Reshapes events of ``event_shape_in`` to ``event_shape_out``; log-det 0.

    Attributes:
        event_shape_in: shape of one input event.
        event_shape_out: shape of one output event (same number of scalars).

    Example:
        >>> flatten = Reshape((8, 8, 1), (64,))
        >>> z, logdet = flatten.apply({}, jnp.zeros((5, 8, 8, 1)), method="forward_and_log_det")
        >>> z.shape, logdet.shape
        ((5, 64), (5,))
    """

    event_shape_in: tuple[int, ...]
    event_shape_out: tuple[int, ...]

    def setup(self):
        if math.prod(self.event_shape_in) != math.prod(self.event_shape_out):
            raise ShapeError(
                f"cannot reshape events of {self.event_shape_in} into {self.event_shape_out}"
            )

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        check_event_shape(x, self.event_shape_in, "Reshape")
        lead = x.shape[: x.ndim - len(self.event_shape_in)]
        return x.reshape((*lead, *self.event_shape_out)), zeros_logdet(
            x, len(self.event_shape_in)
        )

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        check_event_shape(z, self.event_shape_out, "Reshape (inverse)")
        lead = z.shape[: z.ndim - len(self.event_shape_out)]
        return z.reshape((*lead, *self.event_shape_in)), zeros_logdet(
            z, len(self.event_shape_out)
        )
