r"""The absolute value as an inference surjection (SurVAE flows, Nielsen et al. 2020)."""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.names import SAMPLE


class AbsoluteValue(Layer):
    r"""``z = |x|`` elementwise; the generative direction draws the signs.

    An inference surjection: ``x -> z`` is deterministic and ``2^D``-to-one. With the signs
    ``s`` uniform given ``z``, ``x = s z`` and ``p(x | z) = 2^{-D}`` on the preimages, so the
    contribution ``log p(x | z) = -D \log 2`` is exact, and
    ``log p(x) = log p_z(|x|) - D log 2`` is the exact density of data symmetric about 0 when
    ``p_z`` lives on the positive orthant. :meth:`inverse` draws the signs from the ``sample``
    stream; ``forward(inverse(z)) == z`` for ``z >= 0``.

    Attributes:
        event_ndims: dimensions of one event.

    Example:
        >>> layer = AbsoluteValue()
        >>> z, c = layer.apply({}, jnp.array([[-1.0, 2.0]]))
        >>> z.tolist(), [round(float(v), 4) for v in c]
        ([[1.0, 2.0]], [-1.3863])
    """

    layer_kind: ClassVar[Kind] = Kind.INFERENCE_SURJECTION
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({SAMPLE})

    event_ndims: int = 1

    def _dims(self, x: jax.Array) -> int:
        return math.prod(x.shape[x.ndim - self.event_ndims :])

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        batch = x.shape[: x.ndim - self.event_ndims]
        contribution = jnp.full(batch, -self._dims(x) * math.log(2.0), x.dtype)
        return jnp.abs(x), contribution

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        signs = jax.random.rademacher(require_rng(self, SAMPLE), z.shape, z.dtype)
        return signs * z

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
