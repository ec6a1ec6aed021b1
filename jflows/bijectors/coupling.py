"""Affine and additive coupling layers (NICE, RealNVP, Glow)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector
from jflows.bijectors.conditioners import MLP, ConvNet
from jflows.bijectors.masks import make_mask, mask_event_ndims
from jflows.errors import ShapeError
from jflows.kernels.coupling import (
    check_scale_map,
    log_scale_from_raw,
    masked_affine_forward,
    masked_affine_inverse,
)
from jflows.kernels.shapes import sum_event


def _default_conditioner(event_ndims: int) -> nn.Module:
    return MLP() if event_ndims == 1 else ConvNet()


def with_context(x_kept: jax.Array, context: jax.Array | None, event_ndims: int, layer):
    """The conditioner's input: ``x_kept``, with ``context`` appended along the last axis.

    A context for images may be a vector per example (``(..., K)``, repeated over every pixel)
    or a map with the image's height and width (``(..., H, W, K)``). Its leading axes are the
    batch axes of ``x_kept``. A layer built with ``use_context=True`` needs one.
    """
    if not layer.use_context:
        return x_kept
    if context is None:
        raise ShapeError(
            f"{type(layer).__name__} was built with use_context=True and needs a context; "
            f"pass context=... (an array with the batch shape in front)"
        )
    context = jnp.asarray(context, x_kept.dtype)
    batch = x_kept.shape[: x_kept.ndim - event_ndims]
    if event_ndims == 3 and context.ndim == len(batch) + 1:
        context = context[..., None, None, :]
    target = (*batch, *x_kept.shape[len(batch) : -1], context.shape[-1])
    try:
        context = jnp.broadcast_to(context, target)
    except ValueError:
        raise ShapeError(
            f"{type(layer).__name__}: context of shape {context.shape} does not fit data of "
            f"shape {x_kept.shape} (batch shape {batch}); give it the batch shape in front"
        ) from None
    return jnp.concatenate([x_kept, context], axis=-1)


class MaskedCoupling(Bijector):
    r"""Masked affine coupling (RealNVP): ``z = m x + (1 - m)(x e^{s(m x)} + t(m x))``.

    .. math:: \log|\det| = \sum_i (1 - m_i)\, s_i(m \odot x).

    The conditioner sees ``m * x`` and returns ``2 C`` channels per position (``C`` shift
    channels, then ``C`` raw-scale channels; only ``C`` shifts when ``scale_map="none"``,
    i.e. NICE's additive coupling). The raw scale is bounded as described in
    :mod:`jflows.kernels.coupling`.

    Attributes:
        mask: ``"half"`` or ``"alternate"`` for vectors, ``"checkerboard"`` or ``"channel"`` for
            images, or a 0/1 numpy array of the event's shape (1 = kept).
        parity: 1 flips the mask, so two layers with parities 0 and 1 transform every feature.
        conditioner: a module called as ``conditioner(x, out_features)``; defaults to
            ``MLP()`` for vectors and ``ConvNet()`` for images.
        scale_map: ``"tanh"`` (default), ``"sigmoid"``, ``"exp"`` or ``"none"`` (additive).
        scale_bound: bound ``B`` of the ``"tanh"`` map, so ``|s| < B``.
        use_context: condition on ``context`` (appended to the conditioner's input; see
            :func:`with_context`); then every call needs one.

    Example:
        >>> layer = MaskedCoupling(mask="half", parity=0, conditioner=MLP((64, 64)))
    """

    mask: Any = "half"
    parity: int = 0
    conditioner: nn.Module | None = None
    scale_map: str = "tanh"
    scale_bound: float = 3.0
    use_context: bool = False

    @property
    def reads_context(self) -> bool:
        return self.use_context

    def __post_init__(self):
        check_scale_map(self.scale_map)
        mask_event_ndims(self.mask)  # an unknown mask fails at construction
        super().__post_init__()

    def setup(self):
        self.event_ndims = mask_event_ndims(self.mask)
        if self.conditioner is None:
            self.net = _default_conditioner(self.event_ndims)

    def _shift_and_log_scale(self, x_kept, context):
        net = self.conditioner if self.conditioner is not None else self.net
        channels = x_kept.shape[-1]
        inputs = with_context(x_kept, context, self.event_ndims, self)
        if self.scale_map == "none":
            shift = net(inputs, channels)
            return shift, jnp.zeros_like(shift)
        out = net(inputs, 2 * channels)
        shift, raw = out[..., :channels], out[..., channels:]
        return shift, log_scale_from_raw(raw, self.scale_map, self.scale_bound)

    def _mask(self, x):
        event_shape = x.shape[x.ndim - self.event_ndims :]
        return jnp.asarray(make_mask(self.mask, event_shape, self.parity), x.dtype)

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        mask = self._mask(x)
        shift, log_scale = self._shift_and_log_scale(x * mask, context)
        z, per = masked_affine_forward(x, mask, shift, log_scale)
        return z, sum_event(per, self.event_ndims)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        mask = self._mask(z)
        shift, log_scale = self._shift_and_log_scale(z * mask, context)
        x, per = masked_affine_inverse(z, mask, shift, log_scale)
        return x, sum_event(per, self.event_ndims)


class SplitCoupling(Bijector):
    """Coupling on the two halves of the last axis (Glow's channel split; NICE on vectors).

    With ``x = (x_a, x_b)`` split along the last axis (``x_a`` has ``ceil(C/2)`` channels;
    ``parity=1`` swaps the roles), ``z_a = x_a`` and ``z_b = x_b e^{s(x_a)} + t(x_a)``. The
    conditioner only sees ``x_a`` and only produces parameters for ``x_b``, so it is cheaper
    than a masked coupling with the same split.

    Attributes:
        event_ndims: 1 for vectors, 3 for images.
        parity: 1 transforms the first half conditioned on the second.
        conditioner: called as ``conditioner(x_a, out_features)``; defaults to ``MLP()`` /
            ``ConvNet()``.
        scale_map: ``"tanh"``, ``"sigmoid"`` (Glow), ``"exp"`` or ``"none"`` (additive).
        scale_bound: bound of the ``"tanh"`` map.
        use_context: condition on ``context`` (see :func:`with_context`).

    Example:
        >>> layer = SplitCoupling(event_ndims=1, use_context=True)
        >>> x, c = jnp.ones((5, 3)), jnp.zeros((5, 1))
        >>> variables = layer.init(jax.random.key(0), x, c)
        >>> layer.apply(variables, x, c)[1].shape
        (5,)
    """

    event_ndims: int = 1
    parity: int = 0
    conditioner: nn.Module | None = None
    scale_map: str = "tanh"
    scale_bound: float = 3.0
    use_context: bool = False

    @property
    def reads_context(self) -> bool:
        return self.use_context

    def __post_init__(self):
        check_scale_map(self.scale_map)
        super().__post_init__()

    def setup(self):
        if self.conditioner is None:
            self.net = _default_conditioner(self.event_ndims)

    def _split(self, x):
        k = (x.shape[-1] + 1) // 2
        a, b = x[..., :k], x[..., k:]
        return (b, a) if self.parity else (a, b)

    def _join(self, a, b):
        return jnp.concatenate((b, a) if self.parity else (a, b), axis=-1)

    def _shift_and_log_scale(self, a, channels, context):
        net = self.conditioner if self.conditioner is not None else self.net
        inputs = with_context(a, context, self.event_ndims, self)
        if self.scale_map == "none":
            shift = net(inputs, channels)
            return shift, jnp.zeros_like(shift)
        out = net(inputs, 2 * channels)
        shift, raw = out[..., :channels], out[..., channels:]
        return shift, log_scale_from_raw(raw, self.scale_map, self.scale_bound)

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        a, b = self._split(x)
        shift, log_scale = self._shift_and_log_scale(a, b.shape[-1], context)
        zb = b * jnp.exp(log_scale) + shift
        return self._join(a, zb), sum_event(log_scale, self.event_ndims)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        a, zb = self._split(z)
        shift, log_scale = self._shift_and_log_scale(a, zb.shape[-1], context)
        b = (zb - shift) * jnp.exp(-log_scale)
        return self._join(a, b), -sum_event(log_scale, self.event_ndims)
