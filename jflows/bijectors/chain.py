"""Composition of bijectors in reading order, and the inverse of a bijector."""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jflows.bijectors.base import Bijector


class Chain(Bijector):
    r"""Applies ``bijectors`` in reading order: the first element acts first in ``forward``.

    .. math::
        f = f_n \circ \dots \circ f_1,\qquad
        \log|\det J_f(x)| = \sum_i \log|\det J_{f_i}(x_{i-1})|.

    This is the opposite of distrax's ``Chain``, which applies its list from the end.
    For long runs of identical blocks use :class:`jflows.bijectors.Stack`, which compiles one
    block instead of ``n``.

    Example:
        >>> flow = Chain([ActNorm(), AffineCoupling(mask=alternating_mask(2, 0)), Reverse()])
    """

    bijectors: Sequence[Bijector]

    def forward_and_log_det(self, x: jax.Array):
        logdet = 0.0
        for bijector in self.bijectors:
            x, ld = bijector.forward_and_log_det(x)
            logdet = logdet + ld
        return x, logdet

    def inverse_and_log_det(self, z: jax.Array):
        logdet = 0.0
        for bijector in reversed(self.bijectors):
            z, ld = bijector.inverse_and_log_det(z)
            logdet = logdet + ld
        return z, logdet

    def forward(self, x: jax.Array) -> jax.Array:
        for bijector in self.bijectors:
            x = bijector.forward(x)
        return x

    def inverse(self, z: jax.Array) -> jax.Array:
        for bijector in reversed(self.bijectors):
            z = bijector.inverse(z)
        return z


class Inverse(Bijector):
    """Swaps the two directions of ``bijector``: ``Inverse(b).forward == b.inverse``."""

    bijector: Bijector

    def forward_and_log_det(self, x: jax.Array):
        return self.bijector.inverse_and_log_det(x)

    def inverse_and_log_det(self, z: jax.Array):
        return self.bijector.forward_and_log_det(z)

    def forward(self, x: jax.Array) -> jax.Array:
        return self.bijector.inverse(x)

    def inverse(self, z: jax.Array) -> jax.Array:
        return self.bijector.forward(z)
