"""Base distributions of flows: distrax Gaussians held by small Flax modules."""

from __future__ import annotations

from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp


class StandardNormal(nn.Module):
    """``N(0, I)`` over events of ``event_shape`` (a ``distrax.Independent(Normal)``).

    Attributes:
        event_shape: shape of one event, e.g. ``(2,)`` or ``(8, 8, 1)``.
        dtype: dtype of the draws (``"float32"`` or ``"float64"``); ``log_prob`` computes in
            the wider of this and its input's dtype.

    Example:
        >>> base = StandardNormal((2,))
        >>> z = base.apply({}, jax.random.key(0), 5, method="sample")
        >>> z.shape, z.dtype
        ((5, 2), dtype('float32'))
        >>> float(base.apply({}, jnp.zeros(2), method="log_prob"))  # -log(2 pi)
        -1.837...
    """

    event_shape: tuple[int, ...]
    dtype: Any = "float32"

    def distribution(self, temperature: float = 1.0, dtype=None) -> distrax.Distribution:
        """The base as a distrax distribution; ``temperature`` scales the standard deviation.

        ``dtype`` defaults to the base's own.
        """
        dtype = self.dtype if dtype is None else dtype
        loc = jnp.zeros(self.event_shape, dtype)
        scale = jnp.full(self.event_shape, temperature, dtype)
        return distrax.Independent(distrax.Normal(loc, scale), len(self.event_shape))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """Log-density summed over the event; batch axes are kept."""
        dtype = jnp.promote_types(z.dtype, self.dtype)
        return self.distribution(dtype=dtype).log_prob(z.astype(dtype))

    def sample(self, key: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
        """Draws ``n`` events."""
        return self.distribution(temperature).sample(seed=key, sample_shape=(n,))


class DiagonalGaussian(nn.Module):
    """A learned ``N(mu, diag(sigma^2))`` over events of ``event_shape``, starting at ``N(0, I)``.

    Attributes:
        event_shape: shape of one event.
        dtype: dtype of the parameters ``loc`` and ``log_scale`` and of the draws;
            ``log_prob`` computes in the wider of this and its input's dtype.
    """

    event_shape: tuple[int, ...]
    dtype: Any = "float32"

    def setup(self):
        self.loc = self.param("loc", nn.initializers.zeros, self.event_shape, self.dtype)
        self.log_scale = self.param(
            "log_scale", nn.initializers.zeros, self.event_shape, self.dtype
        )

    def distribution(self, temperature: float = 1.0, dtype=None) -> distrax.Distribution:
        """The base as a distrax distribution; ``temperature`` scales the standard deviation.

        ``dtype`` defaults to the base's own.
        """
        dtype = self.dtype if dtype is None else dtype
        loc = self.loc.astype(dtype)
        scale = temperature * jnp.exp(self.log_scale).astype(dtype)
        return distrax.Independent(distrax.Normal(loc, scale), len(self.event_shape))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """Log-density summed over the event; batch axes are kept."""
        dtype = jnp.promote_types(z.dtype, self.dtype)
        return self.distribution(dtype=dtype).log_prob(z.astype(dtype))

    def sample(self, key: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
        """Draws ``n`` events."""
        return self.distribution(temperature).sample(seed=key, sample_shape=(n,))
