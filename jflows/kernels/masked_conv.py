r"""Masked convolutions with triangular Jacobians over the pixel-channel order (MintNet).

Order the scalars of a channels-last image ``(H, W, C)`` by pixel in raster order, then by
channel: :math:`(i, j, c) \prec (i', j', c')` iff :math:`(i, j)` comes first in raster order,
or the pixel is the same and :math:`c < c'`. A ``K x K`` convolution (odd ``K``, ``SAME``
padding) whose weight :math:`w[k_y, k_x, a, b]` (flax's HWIO layout) is kept only where

* the tap :math:`(k_y - m, k_x - m)`, :math:`m = \lfloor K/2 \rfloor`, points to an earlier
  pixel (:math:`k_y < m`, or :math:`k_y = m` and :math:`k_x < m`), or
* it is the centre tap and :math:`c(a) \le c(b)` (:math:`<` for the strict mask),

has output :math:`(i, j, c)` depending only on inputs :math:`\preceq (i, j, c)`: its Jacobian is
lower triangular. Hidden layers have ``G * C`` channels, channel ``h`` playing the role of
channel :math:`c(h) = h \bmod C` (group :math:`h \div C`), so compositions of masked
convolutions and elementwise maps stay triangular and the diagonal of the composition is a sum
over the groups of products of the centre taps (:func:`mint_forward`). The *upper* masks mirror
everything (later pixels, :math:`c(a) \ge c(b)`): upper triangular Jacobians.

The MintNet layer (Song, Meng & Ermon, 2019) is

.. math::
    f(x) = t \odot x + W_3 * \sigma(W_2 * \sigma(W_1 * x + b_1) + b_2) + b_3

with masked convolutions :math:`W_k`, an elementwise activation with :math:`\sigma' > 0` and
:math:`t = e^{s} > 0`. Its Jacobian is triangular with diagonal

.. math::
    d_{p,c} = t_{p,c} + \sum_{g_2, g_1} W_3[g_2, c]\, \sigma'(a_2)_{p,g_2,c}\, W_2[g_1, g_2, c]\,
    \sigma'(a_1)_{p,g_1,c}\, W_1[g_1, c]

(centre taps between the channels of equal :math:`c`). Setting the sign of the centre taps of
:math:`W_2` to :math:`\operatorname{sign} W_1[g_1, c]\,\operatorname{sign} W_3[g_2, c]` makes
every term non-negative, so :math:`d > 0` and :math:`\log|\det J| = \sum \log d` exactly.

The inverse solves :math:`f(x) = z` by MintNet's damped iteration
:math:`x \leftarrow x - \alpha\,(f(x) - z) / d(x)` (a Newton step with the diagonal of the
Jacobian, damped by :math:`\alpha`; the iteration map's Jacobian at the solution is triangular
with diagonal :math:`1 - \alpha`, so it converges locally for :math:`0 < \alpha < 2`), written
for :func:`~jflows.kernels.fixed_point.fixed_point_inverse` as :math:`x + g(x) = y` with
:math:`y = z / t` (the start) and :math:`g(x) = \alpha (f(x) - z)/d(x) - x + y`, which shares the
residual flows' tolerances, diagnostics, failure policies and implicit gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jflows.errors import ConfigError
from jflows.kernels.fixed_point import FixedPointInfo, fixed_point_inverse

ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "elu": (jax.nn.elu, lambda a: jnp.where(a > 0, 1.0, jnp.exp(jnp.minimum(a, 0.0)))),
    "leaky_relu": (lambda a: jnp.where(a > 0, a, 0.1 * a), lambda a: jnp.where(a > 0, 1.0, 0.1)),
}
"""Elementwise activations with a positive derivative: ``name -> (sigma, sigma')``."""


def conv_mask(
    kernel_size: int,
    in_channels: int,
    out_channels: int,
    channels: int,
    *,
    upper: bool = False,
    diagonal: bool = True,
) -> np.ndarray:
    """The 0/1 mask of a ``kernel_size`` convolution with a triangular Jacobian (HWIO layout).

    Args:
        kernel_size: odd ``K``.
        in_channels: input channels, a multiple of ``channels``.
        out_channels: output channels, a multiple of ``channels``.
        channels: ``C``, the image's channels; channel ``h`` stands for channel ``h % C``.
        upper: mirror the order (upper triangular Jacobian).
        diagonal: keep the centre taps between equal channels (``False``: strict mask).

    Returns:
        A float32 array of shape ``(K, K, in_channels, out_channels)``.

    Example:
        >>> conv_mask(3, 1, 1, 1)[..., 0, 0]
        array([[1., 1., 1.],
               [1., 1., 0.],
               [0., 0., 0.]], dtype=float32)
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size must be a positive odd int, got {kernel_size!r}; e.g. 3")
    if channels < 1 or in_channels % channels or out_channels % channels:
        raise ConfigError(
            f"masked convolution channels ({in_channels} in, {out_channels} out) must be "
            f"multiples of the image's {channels} channels; round hidden up to a multiple"
        )
    k, m = kernel_size, kernel_size // 2
    ky, kx = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    raster = (ky - m) * k + (kx - m)  # < 0: an earlier pixel, 0: the centre
    c_in = np.arange(in_channels) % channels
    c_out = np.arange(out_channels) % channels
    if upper:
        raster, c_in, c_out = -raster, -c_in, -c_out
    order = (c_in[:, None] <= c_out[None, :]) if diagonal else (c_in[:, None] < c_out[None, :])
    mask = np.where((raster < 0)[:, :, None, None], True, False)
    mask = mask | ((raster == 0)[:, :, None, None] & order[None, None])
    return mask.astype(np.float32)


def masked_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``SAME`` stride-1 convolution of ``x (..., H, W, Cin)`` with an (already masked) kernel.

    Any number of leading batch axes (or none).

    Example:
        >>> x = jnp.ones((2, 4, 4, 1))
        >>> w = jnp.asarray(conv_mask(3, 1, 2, 1))
        >>> masked_conv(x, w)[0, 1, 1]  # 4 earlier taps, plus the centre for both channels
        Array([5., 5.], dtype=float32)
    """
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    out = lax.conv_general_dilated(
        flat, kernel.astype(x.dtype), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    if bias is not None:
        out = out + bias.astype(out.dtype)
    return out.reshape(*lead, *out.shape[-3:])


def center_diagonal(kernel: jax.Array, channels: int) -> jax.Array:
    """Centre taps between channels of equal ``c``: shape ``(G_in, G_out, C)``.

    Entry ``[g, h, c]`` is ``kernel[m, m, g * C + c, h * C + c]``.

    Example:
        >>> w = jnp.arange(2.0 * 4 * 9).reshape(3, 3, 2, 4)  # C = 2, G_in = 1, G_out = 2
        >>> center_diagonal(w, 2)[0]
        Array([[32., 37.],
               [34., 39.]], dtype=float32)
    """
    m = kernel.shape[0] // 2
    centre = kernel[m, m]
    g_in, g_out = centre.shape[0] // channels, centre.shape[1] // channels
    blocks = centre.reshape(g_in, channels, g_out, channels)
    return jnp.diagonal(blocks, axis1=1, axis2=3)


class MintWeights(NamedTuple):
    """Raw parameters of a Mint layer (kernels in HWIO layout, unmasked; ``log_t`` per scalar).

    Attributes:
        w1: ``(K, K, C, G*C)``. b1: ``(G*C,)``.
        w2: ``(K, K, G*C, G*C)``. b2: ``(G*C,)``.
        w3: ``(K, K, G*C, C)``. b3: ``(C,)``.
        log_t: ``(H, W, C)``, the log of the positive scale ``t`` on ``x``.
    """

    w1: jax.Array
    b1: jax.Array
    w2: jax.Array
    b2: jax.Array
    w3: jax.Array
    b3: jax.Array
    log_t: jax.Array


def constrained_kernels(
    weights: MintWeights, channels: int, upper: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The masked kernels, with the sign rule on ``w2``'s centre taps (module docstring)."""
    w1, w2, w3 = weights.w1, weights.w2, weights.w3
    k = w1.shape[0]
    w1 = w1 * conv_mask(k, w1.shape[2], w1.shape[3], channels, upper=upper).astype(w1.dtype)
    w2 = w2 * conv_mask(k, w2.shape[2], w2.shape[3], channels, upper=upper).astype(w2.dtype)
    w3 = w3 * conv_mask(k, w3.shape[2], w3.shape[3], channels, upper=upper).astype(w3.dtype)
    m = k // 2
    hid1, hid2 = w2.shape[2], w2.shape[3]
    s1 = jnp.sign(w1[m, m, jnp.arange(hid1) % channels, jnp.arange(hid1)])  # per hidden channel
    s3 = jnp.sign(w3[m, m, jnp.arange(hid2), jnp.arange(hid2) % channels])
    same = (np.arange(hid1)[:, None] % channels) == (np.arange(hid2)[None, :] % channels)
    centre = jnp.where(same, s1[:, None] * s3[None, :] * jnp.abs(w2[m, m]), w2[m, m])
    return w1, w2.at[m, m].set(centre), w3


def mint_forward(
    weights: MintWeights, x: jax.Array, channels: int, *, upper: bool = False,
    activation: str = "elu",
) -> tuple[jax.Array, jax.Array]:
    """``(f(x), d(x))``: the Mint layer and the (positive) diagonal of its Jacobian.

    Args:
        weights: raw :class:`MintWeights`.
        x: ``(..., H, W, C)``.
        channels: ``C``.
        upper: upper instead of lower triangular.
        activation: a name in :data:`ACTIVATIONS`.

    Returns:
        ``z`` and ``d``, both shaped like ``x``; ``log|det df/dx| = sum(log d)`` per event.

    Example:
        >>> key = jax.random.key(0)
        >>> w = MintWeights(*(0.1 * jax.random.normal(k, s) for k, s in zip(
        ...     jax.random.split(key, 7),
        ...     [(3, 3, 1, 2), (2,), (3, 3, 2, 2), (2,), (3, 3, 2, 1), (1,), (4, 4, 1)])))
        >>> z, d = mint_forward(w, jnp.ones((4, 4, 1)), 1)
        >>> z.shape, bool(jnp.all(d > 0))
        ((4, 4, 1), True)
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}")
    sigma, dsigma = ACTIVATIONS[activation]
    w1, w2, w3 = constrained_kernels(weights, channels, upper)
    x = x.astype(w1.dtype)
    a1 = masked_conv(x, w1, weights.b1)
    d1 = _groups(dsigma(a1), channels) * center_diagonal(w1, channels)[0]  # (..., G1, C)
    a2 = masked_conv(sigma(a1), w2, weights.b2)
    d2 = jnp.einsum("...gc,ghc->...hc", d1, center_diagonal(w2, channels))
    d2 = d2 * _groups(dsigma(a2), channels)
    out = masked_conv(sigma(a2), w3, weights.b3)
    t = jnp.exp(weights.log_t).astype(x.dtype)
    diag = t + jnp.einsum("...hc,hc->...c", d2, center_diagonal(w3, channels)[:, 0])
    return out + t * x, diag


def _groups(a: jax.Array, channels: int) -> jax.Array:
    """``(..., H, W, G*C) -> (..., H, W, G, C)`` (channel ``g * C + c``)."""
    return a.reshape(*a.shape[:-1], a.shape[-1] // channels, channels)


def mint_inverse(
    weights: MintWeights,
    z: jax.Array,
    channels: int,
    *,
    upper: bool = False,
    activation: str = "elu",
    damping: float = 0.5,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    max_iter: int = 200,
    on_nonconvergence: str = "ignore",
    adjoint_on_nonconvergence: str | None = None,
    name: str = "mint_inverse",
) -> tuple[jax.Array, FixedPointInfo]:
    r"""Solves ``f(x) = z`` by the damped iteration :math:`x \leftarrow x - \alpha (f(x) - z)/d(x)`.

    Runs :func:`~jflows.kernels.fixed_point.fixed_point_inverse` (``lax.while_loop``, step
    tolerance ``|x_k - x_{k-1}| <= atol + rtol |x_k|`` over the whole array, implicit
    gradients) from ``x_0 = z / t``. Its ``residual`` is ``max |alpha (f(x) - z) / d(x)|``.

    Args:
        weights: raw :class:`MintWeights`.
        z: ``(..., H, W, C)``.
        channels: ``C``.
        upper: upper instead of lower triangular.
        activation: a name in :data:`ACTIVATIONS`.
        damping: :math:`\alpha` in ``(0, 2)``.
        atol: absolute step tolerance.
        rtol: relative step tolerance.
        max_iter: iteration cap (of the solve and of its adjoint).
        on_nonconvergence: ``"raise"``, ``"nan"`` or ``"ignore"`` (forward solve).
        adjoint_on_nonconvergence: the same for the adjoint solve (default: as the forward).
        name: names the solve in error messages.

    Returns:
        ``(x, info)``.

    Example:
        >>> w = MintWeights(*(0.1 * jax.random.normal(k, s) for k, s in zip(
        ...     jax.random.split(jax.random.key(0), 7),
        ...     [(3, 3, 1, 2), (2,), (3, 3, 2, 2), (2,), (3, 3, 2, 1), (1,), (4, 4, 1)])))
        >>> x = jnp.linspace(-1, 1, 16).reshape(4, 4, 1)
        >>> xr, info = mint_inverse(w, mint_forward(w, x, 1)[0], 1)
        >>> bool(info.converged), float(jnp.max(jnp.abs(xr - x))) < 1e-4
        (True, True)
    """
    if not 0.0 < float(damping) < 2.0:
        raise ConfigError(f"damping must lie in (0, 2), got {damping!r}; MintNet uses 1/3.5")
    z = z.astype(weights.w1.dtype)
    y = z * jnp.exp(-weights.log_t).astype(z.dtype)

    def g(x):
        fx, d = mint_forward(weights, x, channels, upper=upper, activation=activation)
        return damping * (fx - z) / d - x + y

    return fixed_point_inverse(
        g, y, atol=atol, rtol=rtol, max_iter=max_iter, on_nonconvergence=on_nonconvergence,
        adjoint_on_nonconvergence=adjoint_on_nonconvergence, name=name,
    )
