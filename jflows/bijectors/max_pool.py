r"""2x2 max-pooling of images as an inference surjection (SurVAE flows, Nielsen et al. 2020)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.bijectors.conditioners import ConvNet
from jflows.bijectors.densities import HALF_LOG_2PI, bounded_log_scale
from jflows.errors import ShapeError
from jflows.names import SAMPLE

LOG_4 = math.log(4.0)


def half_normal_log_density(d: jax.Array, log_scale: jax.Array) -> jax.Array:
    r"""Elementwise ``log HalfNormal(d; sigma)`` for ``d >= 0``, ``sigma = e^{log_scale}``.

    .. math:: \log p(d) = \log 2 - \tfrac12 \log 2\pi - \log\sigma - d^2 / (2\sigma^2).
    """
    u = d * jnp.exp(-log_scale)
    return math.log(2.0) - HALF_LOG_2PI - log_scale - 0.5 * u * u


def to_windows(x: jax.Array, where: str) -> jax.Array:
    """``(..., H, W, C) -> (..., H/2, W/2, 4, C)``: the 2x2 windows of channels-last images.

    Window position ``p = 2 a + b`` holds pixel ``(2i + a, 2j + b)`` of window ``(i, j)``.
    Raises ShapeError for odd ``H`` or ``W``.
    """
    if x.ndim < 3:
        raise ShapeError(
            f"{where} expects channels-last images (..., H, W, C), got shape {tuple(x.shape)}"
        )
    *lead, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ShapeError(
            f"{where} pools 2x2 windows and needs even height and width, got images of shape "
            f"{(h, w, c)} (array shape {tuple(x.shape)}); crop or pad them to even sizes, e.g. "
            f"({h + h % 2}, {w + w % 2}, {c})"
        )
    t = x.reshape((*lead, h // 2, 2, w // 2, 2, c))
    t = jnp.swapaxes(t, -4, -3)  # (..., h/2, w/2, 2, 2, c)
    return t.reshape((*lead, h // 2, w // 2, 4, c))


def from_windows(t: jax.Array) -> jax.Array:
    """The inverse of :func:`to_windows`: ``(..., h, w, 4, C) -> (..., 2h, 2w, C)``."""
    *lead, h, w, _, c = t.shape
    t = jnp.swapaxes(t.reshape((*lead, h, w, 2, 2, c)), -4, -3)
    return t.reshape((*lead, 2 * h, 2 * w, c))


class MaxPool2d(Layer):
    r"""``z = `` the maximum of every non-overlapping 2x2 window, per channel.

    An inference surjection for channels-last images ``(H, W, C)`` with even ``H``, ``W``:
    ``z`` has shape ``(H/2, W/2, C)``. For one window and channel with values
    ``x_0 .. x_3`` (position ``p = 2a + b`` for the pixel at row offset ``a``, column
    offset ``b``), let ``m = argmax_p x_p`` (the first one on ties), ``z = x_m`` and
    ``d_p = z - x_p \ge 0``. The generative direction draws ``m`` uniformly and the three
    gaps ``d_p`` (``p != m``) independently from half-normals whose scales come from a
    ConvNet of ``z``:

    .. math::
        \log p(x \mid z) = \sum_{\text{windows, channels}} \Big[-\log 4 + \sum_{p \ne m}
        \log \mathrm{HalfNormal}\big(z - x_p;\ \sigma_p(z)\big)\Big],
        \qquad \log \mathrm{HalfNormal}(d; \sigma) = \log 2 - \tfrac12\log 2\pi - \log\sigma
        - \frac{d^2}{2\sigma^2}.

    ``log sigma`` is ``B tanh(r / B)`` (``B = 5``) of the network's output ``r``; the network
    (``ConvNet(hidden)`` on ``z``, ``4 C`` output channels, channel ``p C + c`` for position
    ``p`` and channel ``c``) has a zero-initialised last layer, so at initialisation every
    ``sigma = 1`` and the contribution is ``sum(-log 4 + 3 (log 2 - log(2 pi)/2) - sum d^2/2)``.
    :meth:`inverse` draws ``m`` and the gaps from the ``sample`` stream and scatters
    ``z`` and ``z - d`` back into the windows; ``forward(inverse(z)) == z``.

    Attributes:
        hidden: hidden channels of the ConvNet of ``z``.
        param_dtype: dtype of its weights (None: the data's float dtype).

    Example:
        >>> layer = MaxPool2d(hidden=4)
        >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
        >>> variables = layer.init(jax.random.key(0), x)
        >>> z, c = layer.apply(variables, x)
        >>> z[0, ..., 0].tolist(), c.shape
        ([[5.0, 7.0], [13.0, 15.0]], (1,))
    """

    layer_kind: ClassVar[Kind] = Kind.INFERENCE_SURJECTION
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({SAMPLE})

    hidden: int = 32
    param_dtype: Any = None

    def setup(self):
        self.net = ConvNet(hidden=self.hidden, param_dtype=self.param_dtype)

    def log_scales(self, z: jax.Array) -> jax.Array:
        """``log sigma(z)`` of shape ``(..., H/2, W/2, 4, C)`` (one per window position)."""
        c = z.shape[-1]
        raw = self.net(z, 4 * c)
        return bounded_log_scale(raw.reshape((*raw.shape[:-1], 4, c)))

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        windows = to_windows(x, type(self).__name__)
        index = jnp.argmax(windows, axis=-2)  # (..., h, w, C)
        z = jnp.max(windows, axis=-2)
        is_max = jnp.arange(4)[:, None] == index[..., None, :]  # (..., h, w, 4, C)
        gaps = z[..., None, :] - windows
        log_density = half_normal_log_density(gaps, self.log_scales(z))
        per_pixel = jnp.sum(jnp.where(is_max, 0.0, log_density), axis=-2) - LOG_4
        return z, jnp.sum(per_pixel, axis=(-3, -2, -1))

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        if z.ndim < 3:
            raise ShapeError(f"MaxPool2d.inverse expects (..., H, W, C) latents, got {z.shape}")
        key_index, key_gaps = jax.random.split(require_rng(self, SAMPLE))
        log_scale = self.log_scales(z)
        index = jax.random.randint(key_index, z.shape, 0, 4)
        gaps = jnp.abs(jax.random.normal(key_gaps, log_scale.shape, z.dtype)) * jnp.exp(log_scale)
        is_max = jnp.arange(4)[:, None] == index[..., None, :]
        windows = z[..., None, :] - jnp.where(is_max, jnp.zeros((), z.dtype), gaps)
        return from_windows(windows)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
