"""Fixed permutations of the last axis (features of a vector, channels of an image)."""

from __future__ import annotations

import jax
import numpy as np

from jflows.bijectors.base import Bijector
from jflows.errors import ShapeError
from jflows.kernels.shapes import zeros_logdet


class Permute(Bijector):
    """Permutes the last axis: ``z[..., i] = x[..., permutation[i]]``; log-det 0.

    Attributes:
        permutation: a permutation of ``range(n)`` for a last axis of size ``n``.
        event_ndims: rank of one event (the log-det has the batch shape).

    Example:
        >>> perm = Permute.random(4, seed=0)  # a fixed random permutation of 4 features
        >>> perm.permutation
        (2, 0, 1, 3)
        >>> perm.apply({}, jnp.arange(4.0), method="forward")
        Array([2., 0., 1., 3.], dtype=float32)
    """

    permutation: tuple[int, ...]
    event_ndims: int = 1

    @classmethod
    def random(cls, n: int, seed: int = 0, event_ndims: int = 1) -> Permute:
        """A fixed permutation drawn with numpy from ``seed`` (so it is reproducible)."""
        perm = np.random.default_rng(seed).permutation(n)
        return cls(tuple(int(i) for i in perm), event_ndims)

    def _check(self, x):
        if x.shape[-1] != len(self.permutation):
            raise ShapeError(
                f"Permute of size {len(self.permutation)} got a last axis of size {x.shape[-1]}"
            )

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        self._check(x)
        return x[..., np.asarray(self.permutation)], zeros_logdet(x, self.event_ndims)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        self._check(z)
        return z[..., np.argsort(self.permutation)], zeros_logdet(z, self.event_ndims)


class Reverse(Bijector):
    """Reverses the last axis; log-det 0.

    Attributes:
        event_ndims: rank of one event.
    """

    event_ndims: int = 1

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        return x[..., ::-1], zeros_logdet(x, self.event_ndims)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        return z[..., ::-1], zeros_logdet(z, self.event_ndims)
