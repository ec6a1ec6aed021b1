r"""Uniform dequantization, reduced bit depth and bits/dim for discrete image data.

Image data are integer levels ``k`` in ``{0, ..., L-1}^D`` (``L = levels``, ``D`` scalars per
image). A continuous model is fitted to the *dequantized* data ``x = k + u``, ``u ~ U[0, 1)^D``,
which stay in units of the levels: ``x`` lies in ``[k, k + 1)``, so in ``[0, L)^D``.

**Why bits/dim can be computed in level units.** Let ``p_x`` be the model density of ``x`` and
``p_y`` that of ``y = x / L`` in ``[0, 1)^D`` (the scaling the papers use, e.g. Residual Flows'
``y = (k + u) / 256``). The change of variables ``x = L y`` has Jacobian ``L^D``, so

.. math::

    p_y(y) = L^D \, p_x(L y), \qquad -\log p_x(x) = -\log p_y(y) + D \log L.

Dividing by ``D \ln 2``:

.. math::

    \frac{-\log p_x(x)}{D \ln 2} = \frac{-\log p_y(y)}{D \ln 2} + \log_2 L,

which is the papers' bits/dim (``"+8"`` for 8-bit data; docs/design.md, "Images and bits per
dimension"). So
:func:`bits_per_dim` of the NLL in level units, with every pre-processing Jacobian (the scaling
to [0, 1), a logit, ...) counted in that NLL, is directly comparable with the published tables.
It is also an upper bound on the discrete data's ``-\log_2 P(k) / D``, since
``P(k) = \int_{[0,1)^D} p_x(k + u) du`` and Jensen's inequality gives
``-\log P(k) \le E_u[-\log p_x(k + u)]``.

Example:
    >>> x = dequantize(jax.random.key(0), jnp.array([[0, 16]], jnp.uint8))
    >>> bool(((x >= jnp.array([[0, 16]])) & (x < jnp.array([[1, 17]]))).all())
    True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jflows.errors import DataError
from jflows.kernels.dequantize import uniform_dequantize


def dequantize(key: jax.Array, x_int: jax.Array) -> jax.Array:
    """Add uniform noise to integer levels: ``x = k + u``, ``u ~ U[0, 1)``, in float32.

    The result lies in ``[k, k + 1)`` exactly: a float32 sum ``k + u`` that rounds up to
    ``k + 1`` (``u`` within half a float32 spacing at ``k`` of 1, about ``k 2^-24``) is
    replaced by the largest float32 below ``k + 1``, so the data stay in ``[0, levels)``.
    Draw ``key`` from the ``dequant`` stream (:data:`jflows.names.DEQUANT`) and use a fresh one
    for every batch. Works under ``jit``. Models dequantize inside, with the
    :class:`jflows.bijectors.UniformDequantization` layer at the front of
    :func:`jflows.models.image_preprocessing`; this function is for data used outside a model.

    Args:
        key: a JAX PRNG key.
        x_int: integer levels of any shape (uint8 images, typically).

    Returns:
        float32 array of ``x_int``'s shape.

    Raises:
        DataError: if ``x_int`` is not an integer array (dequantizing twice is a common bug).

    Example:
        >>> dequantize(jax.random.key(0), jnp.zeros((2, 8, 8, 1), jnp.uint8)).dtype
        dtype('float32')
    """
    x_int = jnp.asarray(x_int)
    if not jnp.issubdtype(x_int.dtype, jnp.integer):
        raise DataError(
            f"dequantize expects integer levels, got dtype {x_int.dtype}; pass the uint8 data "
            f"itself (it may already have been dequantized)"
        )
    return uniform_dequantize(key, x_int, jnp.float32)


def reduce_bits(x_int: np.ndarray, levels: int, n_bits: int) -> tuple[np.ndarray, int]:
    r"""Reduce the bit depth of integer levels, as Glow does for its 5-bit CelebA-HQ models.

    .. math::

        L' = 2^{n_\text{bits}}, \qquad k' = \lfloor k L' / L \rfloor \in \{0, \dots, L'-1\},

    computed in exact integer arithmetic. For ``L = 256`` this is ``k // 2^(8 - n_bits)``.

    Args:
        x_int: integer levels in ``0..levels-1``.
        levels: current number of levels ``L``.
        n_bits: target bit depth; ``2**n_bits`` must not exceed ``levels``.

    Returns:
        ``(x_reduced, new_levels)`` with ``x_reduced`` uint8 of ``x_int``'s shape and
        ``new_levels = 2**n_bits``.

    Raises:
        DataError: if ``n_bits < 1``, ``2**n_bits > levels``, or a value is outside
            ``0..levels-1``.

    Example:
        >>> reduce_bits(np.array([0, 7, 8, 255], np.uint8), 256, 5)
        (array([ 0,  0,  1, 31], dtype=uint8), 32)
    """
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer) or n_bits < 1:
        raise DataError(f"n_bits must be a positive integer, got {n_bits!r}")
    new_levels = 2 ** int(n_bits)
    if new_levels > levels:
        raise DataError(
            f"n_bits={n_bits} gives {new_levels} levels, more than the data's {levels}; "
            f"use n_bits <= {int(math.floor(math.log2(levels)))}"
        )
    x = np.asarray(x_int)
    if not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"reduce_bits expects integer levels, got dtype {x.dtype}")
    if x.size and (int(x.min()) < 0 or int(x.max()) >= levels):
        raise DataError(
            f"reduce_bits: values span {int(x.min())}..{int(x.max())}, outside 0..{levels - 1} "
            f"for levels={levels}; pass the data's true number of levels"
        )
    reduced = (x.astype(np.int64) * new_levels) // levels
    return reduced.astype(np.uint8), new_levels


def bits_per_dim(nll_nats, dims: int):
    """Bits per dimension of an NLL in nats: ``nll / (D ln 2)``.

    ``nll_nats`` must be the negative log-density of the dequantized data in level units
    (``x = k + u``, every pre-processing log-det counted); the result then equals the papers'
    ``-log p(y) / (D ln 2) + log2(levels)`` for ``y = x / levels`` (see the module docstring).

    Args:
        nll_nats: a float or an array (numpy or JAX) of NLLs per image, in nats.
        dims: ``D``, scalars per image (``H W C``).

    Returns:
        Same type and shape as ``nll_nats``.

    Example:
        >>> round(bits_per_dim(64 * math.log(17), 64), 4)  # uniform over 17 levels
        4.0875
    """
    if isinstance(dims, bool) or not isinstance(dims, int | np.integer) or dims < 1:
        raise DataError(f"dims must be a positive integer (scalars per event), got {dims!r}")
    return nll_nats / (int(dims) * math.log(2.0))
