"""Elementwise affine bijectors: fixed (pre-processing) and learned (NICE scaling, priors)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflows.bijectors.base import Bijector, param_dtype_for
from jflows.kernels.elementwise import affine_forward, affine_inverse


class FixedAffine(Bijector):
    r"""A constant map ``z = (x + shift) * scale`` that is part of the model's density.

    Used for pre-processing whose Jacobian must be counted: standardisation of vector data
    (``shift = -mean``, ``scale = 1 / std``) and scaling of image data to ``[0, 1)``
    (``scale = 1 / levels``). Both values are plain Python numbers or tuples (one per channel),
    so they live in the model's configuration rather than in its parameters.

    .. math:: \log|\det| = n \sum_c \log|\mathrm{scale}_c|.

    Attributes:
        shift: scalar or per-channel tuple.
        scale: scalar or per-channel tuple, non-zero.
        event_ndims: rank of one event.
    """

    shift: float | tuple[float, ...] = 0.0
    scale: float | tuple[float, ...] = 1.0
    event_ndims: int = 1

    def _constants(self, dtype):
        shift = jnp.asarray(np.asarray(self.shift), dtype)
        scale = jnp.asarray(np.asarray(self.scale), dtype)
        return shift, scale

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        shift, scale = self._constants(x.dtype)
        _, logdet = affine_forward(x, shift, jnp.log(jnp.abs(scale)), self.event_ndims)
        return (x + shift) * scale, logdet

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        shift, scale = self._constants(z.dtype)
        _, logdet = affine_inverse(z, shift, jnp.log(jnp.abs(scale)), self.event_ndims)
        return z / scale - shift, logdet


class ElementwiseAffine(Bijector):
    """A learned affine map ``z = (x + b) e^{s}``, initialised to the identity.

    With ``per_channel=False`` there is one ``(b, s)`` per scalar of the event (NICE's final
    diagonal scaling layer uses ``use_shift=False``; Glow's learned top prior is this map with
    ``b = -mu`` and ``s = -log sigma``).

    Attributes:
        event_ndims: rank of one event.
        per_channel: share parameters over spatial positions (last axis only) when True.
        use_shift: learn ``b`` (otherwise ``b = 0``).
        param_dtype: dtype of ``b`` and ``s`` (None: the dtype of the data at ``init``).
    """

    event_ndims: int = 1
    per_channel: bool = False
    use_shift: bool = True
    param_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, inverse: bool = False):
        """Forward (or, with ``inverse=True``, inverse) map and its log-determinant."""
        shape = (x.shape[-1],) if self.per_channel else x.shape[x.ndim - self.event_ndims :]
        dtype = param_dtype_for(self.param_dtype, x)
        log_scale = self.param("log_scale", lambda _: jnp.zeros(shape, dtype))
        if self.use_shift:
            shift = self.param("shift", lambda _: jnp.zeros(shape, dtype))
        else:
            shift = jnp.zeros(shape, dtype)
        if inverse:
            return affine_inverse(x, shift, log_scale, self.event_ndims)
        return affine_forward(x, shift, log_scale, self.event_ndims)

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        return self(x)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        return self(z, inverse=True)
