"""Multi-scale factor-out, with Glow's optional learned conditional prior."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Layer
from jflows.bijectors.conditioners import ConvNet
from jflows.kernels.shapes import sum_event


class FactorOut(Layer):
    """Splits the channels; the first half goes on through ``inner``, the rest is factored out.

    With ``x = (x_a, x_b)`` split along channels (``x_a`` has ``ceil(C/2)`` channels),
    ``z = (inner(x_a), u(x_b; x_a))``, so the latent keeps the input's shape and the whole
    multi-scale model stays one bijection whose Jacobian can be checked by brute force.

    ``u`` is the identity (a standard normal prior on the factored-out half, as RealNVP) or,
    with ``learned_prior=True``, Glow's learned conditional prior written as a bijection:
    ``u = (x_b - mu(x_a)) e^{-log sigma(x_a)}``, with ``(mu, log sigma)`` from a zero-initialised
    convolution of the kept half. Then
    ``log N(u; 0, I) - sum log sigma = log N(x_b; mu(x_a), sigma(x_a)^2)``, exactly Glow's
    conditional log-likelihood, and sampling ``u ~ N(0, T^2)`` gives ``x_b = mu + T sigma eps``:
    Glow's temperature, with ``T = 0`` returning the prior means.

    Attributes:
        inner: the bijector applied to the kept half (the next level of the model).
        learned_prior: use the learned conditional prior for the factored-out half.
        prior_hidden: hidden channels of the prior network (0: a single zero-initialised 3x3
            convolution, as in Glow).
        param_dtype: dtype of the prior network's weights (None: the data's at ``init``).
    """

    inner: Layer
    learned_prior: bool = False
    prior_hidden: int = 0
    param_dtype: Any = None

    def sublayers(self) -> Sequence[Layer]:
        return (self.inner,)

    def setup(self):
        if self.learned_prior:
            sizes = (3,) if self.prior_hidden == 0 else (3, 1, 3)
            self.prior_net = ConvNet(
                hidden=max(self.prior_hidden, 1), kernel_sizes=sizes, param_dtype=self.param_dtype
            )

    def _split(self, x):
        k = (x.shape[-1] + 1) // 2
        return x[..., :k], x[..., k:]

    def conditional_prior(self, x_kept: jax.Array, channels: int):
        """Returns ``(mu, log_sigma)`` of the factored-out half given the kept half."""
        out = self.prior_net(x_kept, 2 * channels)
        return out[..., :channels], out[..., channels:]

    def _forward(self, x: jax.Array, with_log_det: bool, context):
        a, b = self._split(x)
        if with_log_det:
            za, logdet = self.inner.forward_and_log_det(a, context)
        else:
            za, logdet = self.inner.forward(a, context), None
        if self.learned_prior:
            mu, log_sigma = self.conditional_prior(a, b.shape[-1])
            b = (b - mu) * jnp.exp(-log_sigma)
            if with_log_det:
                logdet = logdet - sum_event(log_sigma, 3)
        return jnp.concatenate([za, b], axis=-1), logdet

    def _inverse(self, z: jax.Array, with_log_det: bool, context):
        k = (z.shape[-1] + 1) // 2
        za, u = z[..., :k], z[..., k:]
        if with_log_det:
            a, logdet = self.inner.inverse_and_log_det(za, context)
        else:
            a, logdet = self.inner.inverse(za, context), None
        if self.learned_prior:
            mu, log_sigma = self.conditional_prior(a, u.shape[-1])
            u = u * jnp.exp(log_sigma) + mu
            if with_log_det:
                logdet = logdet + sum_event(log_sigma, 3)
        return jnp.concatenate([a, u], axis=-1), logdet

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        return self._forward(x, True, context)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        return self._inverse(z, True, context)

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self._forward(x, False, context)[0]

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self._inverse(z, False, context)[0]
