r"""Sorting and random permutations of exchangeable coordinates (SurVAE flows, Nielsen et al.).

Both layers act on vectors (``event_ndims = 1``: the last axis is the event) whose coordinates
are exchangeable, such as sets of points or i.i.d. draws. A uniformly random ordering of one
event is drawn by :func:`shuffle_last_axis`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.kernels.shapes import batch_shape
from jflows.names import NOISE, SAMPLE


def shuffle_last_axis(key: jax.Array, x: jax.Array) -> jax.Array:
    """``x`` with its last axis permuted uniformly at random, independently for every event.

    Example:
        >>> x = jnp.tile(jnp.arange(4.0), (2, 1))
        >>> y = shuffle_last_axis(key, x)
        >>> bool((jnp.sort(y, axis=-1) == x).all())
        True
    """
    return jax.random.permutation(key, x, axis=-1, independent=True)


def log_factorial(d: int) -> float:
    """``log d!`` (``math.lgamma(d + 1)``)."""
    return math.lgamma(d + 1)


class Sort(Layer):
    r"""``z = sort(x)`` ascending along the last axis: an inference surjection.

    ``x -> z`` is deterministic and ``D!``-to-one: every ordering of the coordinates maps to
    the same sorted ``z``. The generative direction draws one of them uniformly,
    ``p(x | z) = 1 / D!`` on the ``D!`` preimages, so the contribution is exactly

    .. math:: \log p(x \mid z) = -\log D!

    and ``log p(x) = log p_z(sort(x)) - log D!`` is the exact density of exchangeable data when
    ``p_z`` lives on sorted vectors (``z_1 <= ... <= z_D``). Ties have probability zero for
    continuous data. :meth:`inverse` applies a uniformly random permutation to every event
    (stream ``sample``); ``forward(inverse(z)) == z`` for sorted ``z``.

    Example:
        >>> z, c = Sort().apply({}, jnp.array([[3.0, 1.0, 2.0]]))
        >>> z.tolist(), [round(float(v), 4) for v in c]  # -log 3!
        ([[1.0, 2.0, 3.0]], [-1.7918])
        >>> x = Sort().apply({}, z, method="inverse", rngs={"sample": key})
        >>> sorted(x[0].tolist())
        [1.0, 2.0, 3.0]
    """

    layer_kind: ClassVar[Kind] = Kind.INFERENCE_SURJECTION
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({SAMPLE})

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        batch = batch_shape(x, 1)
        contribution = jnp.full(batch, -log_factorial(x.shape[-1]), x.dtype)
        return jnp.sort(x, axis=-1), contribution

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        batch_shape(z, 1)
        return shuffle_last_axis(require_rng(self, SAMPLE), z)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")


class StochasticPermutation(Layer):
    r"""``z`` = a uniformly random permutation of ``x``'s last axis: a generative surjection.

    The data-to-latent direction draws the permutation (stream ``noise``), one per event:
    ``q(z | x) = 1 / D!`` on the orderings of ``x``. The generative direction is also a uniformly
    random permutation, ``p(x | z) = 1 / D!`` (stream ``sample``), so the contribution is

    .. math:: \log p(x \mid z) - \log q(z \mid x) = -\log D! + \log D! = 0

    for every draw (distinct coordinates). The generative direction permutes at random rather
    than keeping ``z``'s order, so that it is the ``p(x | z)`` the contribution is computed
    with: a model ending in this layer generates exchangeable data. A flow with this layer
    reports a bound (its kind is stochastic), although for a base that is itself exchangeable
    the bound is tight.

    Example:
        >>> x = jnp.array([[1.0, 2.0, 3.0]])
        >>> z, c = StochasticPermutation().apply({}, x, rngs={"noise": key})
        >>> sorted(z[0].tolist()), c.tolist()
        ([1.0, 2.0, 3.0], [0.0])
    """

    layer_kind: ClassVar[Kind] = Kind.STOCHASTIC
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({NOISE, SAMPLE})

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        batch = batch_shape(x, 1)
        z = shuffle_last_axis(require_rng(self, NOISE), x)
        return z, jnp.zeros(batch, x.dtype)

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        batch_shape(z, 1)
        return shuffle_last_axis(require_rng(self, SAMPLE), z)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
