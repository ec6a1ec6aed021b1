"""Uniform dequantization noise: integer levels ``k`` to ``k + u``, ``u ~ U[0, 1)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def uniform_dequantize(key: jax.Array, levels: jax.Array, dtype=jnp.float32) -> jax.Array:
    """``k + u`` with ``u ~ U[0, 1)``, kept strictly below ``k + 1`` in ``dtype``.

    A rounded sum ``k + u`` that reaches ``k + 1`` (``u`` within half a spacing of 1 at
    ``k``, about ``k 2^-24`` in float32) is replaced by the largest number below ``k + 1``, so
    data in ``{0, ..., L-1}`` stay in ``[0, L)``.

    Args:
        key: a PRNG key (the ``dequant`` stream).
        levels: integer levels ``k``, of any dtype that holds them exactly.
        dtype: the floating dtype of the result.

    Example:
        >>> x = uniform_dequantize(jax.random.key(0), jnp.array([0, 16], jnp.uint8))
        >>> bool(((x >= jnp.array([0, 16])) & (x < jnp.array([1, 17]))).all())
        True
    """
    k = jnp.asarray(levels).astype(dtype)
    u = jax.random.uniform(key, k.shape, dtype)
    return jnp.minimum(k + u, jnp.nextafter(k + 1, k))
