r"""Convolutions on images no larger than the kernel window, as one dense matrix product.

A stride-1 "SAME" convolution is a linear map of each event: output pixel ``(i, j)``, channel
``o`` reads input pixel ``(i', j')``, channel ``c`` through the tap
``K[i' - i + p_h, j' - j + p_w, c, o]`` (``p = (k - 1) // 2``, zero outside the kernel). When
the image has no more pixels than the kernel window (``H W <= k_h k_w``: a 3x3 convolution on
the 2x2 top level of a multi-scale flow, any convolution on 1x1), that map as a dense
``(H W C_in) x (H W C_out)`` matrix costs no more multiplications than the convolution, and
XLA:CPU runs the product as one matrix multiplication, while it lowers such convolutions
(window larger than the image, many channels) to a slow generic loop: 10-45x slower on a
(2000, 2, 2, 64) batch (``benchmarks/README.md``, W5). With at most :data:`FEW_CHANNELS`
input or output channels the dense route also wins on images of up to twice the window
(3x3 on 4x4: 16/9 of the multiplications, but XLA:CPU vectorises a convolution with 4
output channels poorly: 4.9 ms vs 2.7 ms on (2000, 4, 4, 64) -> 4 channels).
:func:`conv_general_dilated` is a drop-in for ``jax.lax.conv_general_dilated`` (what
``flax.linen.Conv`` takes as its ``conv_general_dilated``) that takes the dense route in those
cases and calls ``lax.conv_general_dilated`` otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

FEW_CHANNELS = 8
"""Up to this many input or output channels, images of up to twice the window go dense too."""

NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
"""Dimension numbers of NHWC inputs, HWIO kernels and NHWC outputs (flax's convention)."""


def same_conv_matrix(kernel: jax.Array, height: int, width: int) -> jax.Array:
    """The ``(H W C_in, H W C_out)`` matrix of a stride-1 "SAME" convolution on ``H x W`` images.

    Rows and columns are flattened ``(i, j, c)`` in row-major order, as ``x.reshape(n, -1)``.

    Example:
        >>> k = jax.random.normal(key, (3, 3, 2, 5))
        >>> x = jax.random.normal(key, (4, 2, 2, 2))
        >>> m = same_conv_matrix(k, 2, 2)
        >>> y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
        ...                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
        >>> m.shape, bool(jnp.allclose((x.reshape(4, -1) @ m).reshape(y.shape), y, atol=1e-5))
        ((8, 20), True)
    """
    kh, kw, c_in, c_out = kernel.shape
    i_in, j_in, i_out, j_out = np.meshgrid(
        np.arange(height), np.arange(width), np.arange(height), np.arange(width), indexing="ij"
    )
    a, b = i_in - i_out + (kh - 1) // 2, j_in - j_out + (kw - 1) // 2
    inside = (a >= 0) & (a < kh) & (b >= 0) & (b < kw)
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # row kh / column kw: zeros
    taps = padded[np.where(inside, a, kh), np.where(inside, b, kw)]  # (H, W, H, W, Cin, Cout)
    return taps.transpose(0, 1, 4, 2, 3, 5).reshape(height * width * c_in, -1)


def _is_nhwc(dims) -> bool:
    if isinstance(dims, lax.ConvDimensionNumbers):
        return (tuple(dims.lhs_spec), tuple(dims.rhs_spec), tuple(dims.out_spec)) == NHWC
    return dims is not None and tuple(dims) == ("NHWC", "HWIO", "NHWC")


def _dense_ok(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
              feature_group_count) -> bool:
    if lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != 1:
        return False
    if not isinstance(padding, str) or padding.upper() != "SAME":
        return False
    if any(s != 1 for s in window_strides):
        return False
    if any(d != 1 for d in (*(lhs_dilation or (1, 1)), *(rhs_dilation or (1, 1)))):
        return False
    if not _is_nhwc(dimension_numbers):
        return False
    pixels, window = lhs.shape[1] * lhs.shape[2], rhs.shape[0] * rhs.shape[1]
    few_channels = min(rhs.shape[2], rhs.shape[3]) <= FEW_CHANNELS
    return pixels <= window or (few_channels and pixels <= 2 * window)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``lax.conv_general_dilated``, by :func:`same_conv_matrix` when the image fits the window.

    The dense route is taken for NHWC/HWIO stride-1 undilated "SAME" convolutions whose
    images have ``H W <= k_h k_w`` pixels (``<= 2 k_h k_w`` with at most
    :data:`FEW_CHANNELS` input or output channels); every other call goes to
    ``lax.conv_general_dilated`` unchanged. Results agree up to float rounding.

    Example:
        >>> conv = nn.Conv(4, (3, 3), conv_general_dilated=conv_general_dilated)
        >>> x = jnp.ones((5, 2, 2, 64))
        >>> conv.apply(conv.init(key, x), x).shape
        (5, 2, 2, 4)
    """
    if batch_group_count == 1 and _dense_ok(lhs, rhs, window_strides, padding, lhs_dilation,
                                            rhs_dilation, dimension_numbers, feature_group_count):
        n, height, width, _ = lhs.shape
        matrix = same_conv_matrix(rhs, height, width)
        out = jnp.matmul(lhs.reshape(n, -1), matrix, precision=precision,
                         preferred_element_type=preferred_element_type)
        return out.reshape(n, height, width, rhs.shape[-1])
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type,
    )
