"""Logit pre-processing of data in [0, 1), with its log-determinant."""

from __future__ import annotations

import jax

from jflows.bijectors.base import Bijector
from jflows.kernels.elementwise import logit_forward, logit_inverse


class Logit(Bijector):
    """``z = logit(alpha + (1 - 2 alpha) y)`` for ``y`` in [0, 1) (see ``kernels.elementwise``).

    Attributes:
        alpha: margin keeping the logit finite (0.05 for natural images, 1e-6 for MNIST in the
            Residual Flows code).
        event_ndims: rank of one event.
    """

    alpha: float = 0.05
    event_ndims: int = 3

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        return logit_forward(x, self.alpha, self.event_ndims)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        return logit_inverse(z, self.alpha, self.event_ndims)
