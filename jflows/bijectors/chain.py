"""Composition of layers in reading order, and the inverse of a bijector."""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jflows.bijectors.base import Kind, Layer, not_bijective


class Chain(Layer):
    r"""Applies ``bijectors`` in reading order: the first element acts first in ``forward``.

    .. math::
        f = f_n \circ \dots \circ f_1,\qquad
        \log|\det J_f(x)| = \sum_i \log|\det J_{f_i}(x_{i-1})|.

    The elements may be any layers (surjections and stochastic layers too: the contributions
    add up the same way); the chain's kind, estimate and RNG streams are its elements'
    weakest and union. ``context`` is passed to every element. This is the opposite order of
    distrax's ``Chain``, which applies its list from the end. For long runs of identical blocks
    use :class:`jflows.bijectors.Stack`, which compiles one block instead of ``n``.

    Example:
        >>> from jflows.bijectors import ActNorm, MaskedCoupling, Reverse
        >>> flow = Chain([ActNorm(), MaskedCoupling(mask="alternate"), Reverse()])
        >>> flow.kind.name
        'BIJECTION'
    """

    bijectors: Sequence[Layer]

    def sublayers(self) -> Sequence[Layer]:
        return tuple(self.bijectors)

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        logdet = 0.0
        for bijector in self.bijectors:
            x, ld = bijector.forward_and_log_det(x, context)
            logdet = logdet + ld
        return x, logdet

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        logdet = 0.0
        for bijector in reversed(self.bijectors):
            z, ld = bijector.inverse_and_log_det(z, context)
            logdet = logdet + ld
        return z, logdet

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        for bijector in self.bijectors:
            x = bijector.forward(x, context)
        return x

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        for bijector in reversed(self.bijectors):
            z = bijector.inverse(z, context)
        return z


class Inverse(Layer):
    """Swaps the two directions of ``bijector``: ``Inverse(b).forward == b.inverse``.

    Only bijections can be inverted (a surjection's two directions are not symmetric).
    """

    bijector: Layer

    def __post_init__(self):
        if self.bijector.kind != Kind.BIJECTION:
            raise not_bijective(self.bijector, "Inverse")
        super().__post_init__()

    def sublayers(self) -> Sequence[Layer]:
        return (self.bijector,)

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        return self.bijector.inverse_and_log_det(x, context)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        return self.bijector.forward_and_log_det(z, context)

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self.bijector.inverse(x, context)

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self.bijector.forward(z, context)
