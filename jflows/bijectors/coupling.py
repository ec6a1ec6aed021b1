"""Affine and additive coupling layers (NICE, RealNVP, Glow)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector
from jflows.bijectors.conditioners import MLP, ConvNet
from jflows.bijectors.masks import make_mask, mask_event_ndims
from jflows.kernels.coupling import (
    check_scale_map,
    log_scale_from_raw,
    masked_affine_forward,
    masked_affine_inverse,
)
from jflows.kernels.shapes import sum_event


def _default_conditioner(event_ndims: int) -> nn.Module:
    return MLP() if event_ndims == 1 else ConvNet()


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

    Example:
        >>> layer = MaskedCoupling(mask="half", parity=0, conditioner=MLP((64, 64)))
    """

    mask: Any = "half"
    parity: int = 0
    conditioner: nn.Module | None = None
    scale_map: str = "tanh"
    scale_bound: float = 3.0

    def __post_init__(self):
        check_scale_map(self.scale_map)
        mask_event_ndims(self.mask)  # an unknown mask fails at construction
        super().__post_init__()

    def setup(self):
        self.event_ndims = mask_event_ndims(self.mask)
        if self.conditioner is None:
            self.net = _default_conditioner(self.event_ndims)

    def _shift_and_log_scale(self, x_kept):
        net = self.conditioner if self.conditioner is not None else self.net
        channels = x_kept.shape[-1]
        if self.scale_map == "none":
            shift = net(x_kept, channels)
            return shift, jnp.zeros_like(shift)
        out = net(x_kept, 2 * channels)
        shift, raw = out[..., :channels], out[..., channels:]
        return shift, log_scale_from_raw(raw, self.scale_map, self.scale_bound)

    def _mask(self, x):
        event_shape = x.shape[x.ndim - self.event_ndims :]
        return jnp.asarray(make_mask(self.mask, event_shape, self.parity), x.dtype)

    def forward_and_log_det(self, x: jax.Array):
        mask = self._mask(x)
        shift, log_scale = self._shift_and_log_scale(x * mask)
        z, per = masked_affine_forward(x, mask, shift, log_scale)
        return z, sum_event(per, self.event_ndims)

    def inverse_and_log_det(self, z: jax.Array):
        mask = self._mask(z)
        shift, log_scale = self._shift_and_log_scale(z * mask)
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
    """

    event_ndims: int = 1
    parity: int = 0
    conditioner: nn.Module | None = None
    scale_map: str = "tanh"
    scale_bound: float = 3.0

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

    def _shift_and_log_scale(self, a, channels):
        net = self.conditioner if self.conditioner is not None else self.net
        if self.scale_map == "none":
            shift = net(a, channels)
            return shift, jnp.zeros_like(shift)
        out = net(a, 2 * channels)
        shift, raw = out[..., :channels], out[..., channels:]
        return shift, log_scale_from_raw(raw, self.scale_map, self.scale_bound)

    def forward_and_log_det(self, x: jax.Array):
        a, b = self._split(x)
        shift, log_scale = self._shift_and_log_scale(a, b.shape[-1])
        zb = b * jnp.exp(log_scale) + shift
        return self._join(a, zb), sum_event(log_scale, self.event_ndims)

    def inverse_and_log_det(self, z: jax.Array):
        a, zb = self._split(z)
        shift, log_scale = self._shift_and_log_scale(a, zb.shape[-1])
        b = (zb - shift) * jnp.exp(-log_scale)
        return self._join(a, b), -sum_event(log_scale, self.event_ndims)
