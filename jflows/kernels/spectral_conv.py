r"""The convolution as a linear operator, for power iteration at a given input size.

A 2-D convolution with kernel ``K`` (HWIO) acting on one channels-last image of shape
``(H, W, C_in)`` is a linear map :math:`A_K : \mathbb{R}^{H \times W \times C_{in}} \to
\mathbb{R}^{H' \times W' \times C_{out}}` that depends on the zero padding and the strides.
Its spectral norm is the Lipschitz constant of the layer **at that input size**, which is what
i-ResNet and Residual Flows normalise (not the norm of the reshaped kernel matrix). The
transpose comes from ``jax.linear_transpose``, so it matches ``matvec`` exactly for any
padding and stride. For power iteration, ``v`` lives in the input space ``(H, W, C_in)`` and
``u`` in the output space ``(H', W', C_out)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jflows.kernels.spectral import Operator

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def conv_apply(
    kernel: jax.Array,
    image: jax.Array,
    padding: str | Sequence[tuple[int, int]] = "SAME",
    strides: tuple[int, int] = (1, 1),
) -> jax.Array:
    """Convolves one image ``(H, W, C_in)`` with ``kernel`` (HWIO), without bias."""
    out = lax.conv_general_dilated(
        image[None], kernel, strides, padding, dimension_numbers=DIMENSION_NUMBERS
    )
    return out[0]


def conv_output_shape(
    kernel_shape: tuple[int, ...],
    input_shape: tuple[int, int, int],
    padding: str | Sequence[tuple[int, int]] = "SAME",
    strides: tuple[int, int] = (1, 1),
) -> tuple[int, int, int]:
    """Shape ``(H', W', C_out)`` of the convolution output for one image of ``input_shape``."""
    kern = jax.ShapeDtypeStruct(tuple(kernel_shape), jnp.float32)
    img = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    out = jax.eval_shape(lambda k, x: conv_apply(k, x, padding, strides), kern, img)
    return tuple(out.shape)


def conv_operator(
    kernel: jax.Array,
    input_shape: tuple[int, int, int],
    padding: str | Sequence[tuple[int, int]] = "SAME",
    strides: tuple[int, int] = (1, 1),
) -> tuple[Operator, Operator]:
    """``(matvec, rmatvec)`` of the convolution with ``kernel`` on images of ``input_shape``.

    Args:
        kernel: HWIO kernel (may be a traced parameter).
        input_shape: ``(H, W, C_in)`` of one image.
        padding: ``"SAME"``, ``"VALID"`` or explicit ``((lo, hi), (lo, hi))`` pairs.
        strides: window strides.

    Returns:
        ``matvec`` from ``(H, W, C_in)`` to ``(H', W', C_out)`` and its exact transpose.

    Example:
        >>> k = jnp.zeros((3, 3, 2, 4)).at[1, 1].set(jnp.eye(2, 4))
        >>> mv, rmv = conv_operator(k, (5, 5, 2))
        >>> mv(jnp.ones((5, 5, 2))).shape, rmv(jnp.ones((5, 5, 4))).shape
        ((5, 5, 4), (5, 5, 2))
    """

    def matvec(v):
        return conv_apply(kernel, v, padding, strides)

    example = jax.ShapeDtypeStruct(tuple(input_shape), kernel.dtype)
    transpose = jax.linear_transpose(matvec, example)

    def rmatvec(u):
        return transpose(u)[0]

    return matvec, rmatvec
