"""ActNorm: a per-channel affine map whose parameters are initialised from data."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector, param_dtype_for
from jflows.kernels.elementwise import affine_forward, affine_inverse


class ActNorm(Bijector):
    r"""Activation normalisation (Kingma & Dhariwal, 2018) for vectors and images.

    .. math::
        z = (x + b) \odot e^{s},\qquad \log|\det| = n \sum_c s_c,

    with one ``(b_c, s_c)`` per channel (the last axis) and ``n`` the number of positions per
    channel in one event (``H * W`` for an image, 1 for a vector).

    Data-dependent initialisation happens inside ``init``: the parameter initialisers close over
    the batch passed to ``init``, giving ``b = -mean`` and ``s = -log(max(std, min_init_std))``
    over every axis except the channel axis, so the output of the layer on that batch has zero
    mean and unit variance per channel. Call ``init`` on a real data batch (through the
    ``forward`` direction). There is no "initialised" flag: after ``init`` the values are
    ordinary parameters.

    Attributes:
        event_ndims: rank of one event (1 for vectors, 3 for ``(H, W, C)`` images).
        min_init_std: floor on the standard deviation used at initialisation, so a constant
            channel does not get an enormous scale.
        param_dtype: dtype of ``b`` and ``s`` (None: the dtype of the data at ``init``).

    Example:
        >>> images = jax.random.uniform(key, (16, 8, 8, 3))
        >>> layer = ActNorm(event_ndims=3)
        >>> variables = layer.init(key, images, method="forward_and_log_det")
        >>> z, logdet = layer.apply(variables, images, method="forward_and_log_det")
        >>> z.shape, logdet.shape
        ((16, 8, 8, 3), (16,))
        >>> bool(jnp.allclose(z.mean((0, 1, 2)), 0.0, atol=1e-5))  # zero mean per channel
        True
    """

    event_ndims: int = 1
    min_init_std: float = 1e-2
    param_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, inverse: bool = False):
        """Forward (or, with ``inverse=True``, inverse) map and its log-determinant."""
        data = jax.lax.stop_gradient(x)
        axes = tuple(range(x.ndim - 1))
        dtype = param_dtype_for(self.param_dtype, x)

        def shift_init(_key):
            if inverse:  # initialised from the latent side: start at the identity
                return jnp.zeros((x.shape[-1],), dtype)
            return -jnp.mean(data, axis=axes).astype(dtype)

        def log_scale_init(_key):
            if inverse:
                return jnp.zeros((x.shape[-1],), dtype)
            std = jnp.std(data, axis=axes)
            return -jnp.log(jnp.maximum(std, self.min_init_std)).astype(dtype)

        shift = self.param("shift", shift_init)
        log_scale = self.param("log_scale", log_scale_init)
        if inverse:
            return affine_inverse(x, shift, log_scale, self.event_ndims)
        return affine_forward(x, shift, log_scale, self.event_ndims)

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        return self(x)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        return self(z, inverse=True)
