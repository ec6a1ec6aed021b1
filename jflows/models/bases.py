"""Base distributions of flows: distrax Gaussians held by small Flax modules."""

from __future__ import annotations

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp


class StandardNormal(nn.Module):
    """``N(0, I)`` over events of ``event_shape`` (a ``distrax.Independent(Normal)``).

    Attributes:
        event_shape: shape of one event, e.g. ``(2,)`` or ``(8, 8, 1)``.
    """

    event_shape: tuple[int, ...]

    def distribution(self, temperature: float = 1.0, dtype=jnp.float32) -> distrax.Distribution:
        """The base as a distrax distribution; ``temperature`` scales the standard deviation."""
        loc = jnp.zeros(self.event_shape, dtype)
        scale = jnp.full(self.event_shape, temperature, dtype)
        return distrax.Independent(distrax.Normal(loc, scale), len(self.event_shape))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """Log-density summed over the event; batch axes are kept."""
        return self.distribution(dtype=z.dtype).log_prob(z)

    def sample(self, key: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
        """Draws ``n`` events."""
        return self.distribution(temperature).sample(seed=key, sample_shape=(n,))


class DiagonalGaussian(nn.Module):
    """A learned ``N(mu, diag(sigma^2))`` over events of ``event_shape``, starting at ``N(0, I)``.

    Attributes:
        event_shape: shape of one event.
    """

    event_shape: tuple[int, ...]

    def setup(self):
        self.loc = self.param("loc", nn.initializers.zeros, self.event_shape)
        self.log_scale = self.param("log_scale", nn.initializers.zeros, self.event_shape)

    def distribution(self, temperature: float = 1.0, dtype=jnp.float32) -> distrax.Distribution:
        """The base as a distrax distribution; ``temperature`` scales the standard deviation."""
        loc = self.loc.astype(dtype)
        scale = temperature * jnp.exp(self.log_scale).astype(dtype)
        return distrax.Independent(distrax.Normal(loc, scale), len(self.event_shape))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """Log-density summed over the event; batch axes are kept."""
        return self.distribution(dtype=z.dtype).log_prob(z)

    def sample(self, key: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
        """Draws ``n`` events."""
        return self.distribution(temperature).sample(seed=key, sample_shape=(n,))
