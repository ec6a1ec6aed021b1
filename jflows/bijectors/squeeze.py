"""Squeeze (space-to-depth) as a bijector; channel order documented in ``kernels.squeeze``."""

from __future__ import annotations

import jax

from jflows.bijectors.base import Bijector
from jflows.kernels.shapes import zeros_logdet
from jflows.kernels.squeeze import squeeze, unsqueeze


class Squeeze(Bijector):
    """``(..., H, W, C) -> (..., H/f, W/f, C f^2)``; a permutation, so log-det 0.

    Attributes:
        factor: spatial factor ``f``.
    """

    factor: int = 2

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        return squeeze(x, self.factor), zeros_logdet(x, 3)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        return unsqueeze(z, self.factor), zeros_logdet(z, 3)
