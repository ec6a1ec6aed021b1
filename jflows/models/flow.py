"""Flow: a bijector from data to latent plus a base distribution on the latent."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector, require_rng
from jflows.kernels.shapes import check_event_shape
from jflows.names import SAMPLE


class Flow(nn.Module):
    """A normalizing flow ``log p(x) = log p_base(f(x)) + log|det df/dx|``.

    ``bijector`` maps data ``x`` to latent ``z`` (``forward``); sampling draws ``z`` from the
    base and runs ``inverse``. Every method accepts one event or any leading batch axes.

    **Dtype.** A flow has one dtype (the factories' ``dtype`` argument, float32 by default):
    its parameters, its base draws and every intermediate array are in it. Arrays given to
    any method are cast to it at this boundary, as a Flax layer with an explicit ``dtype``
    casts its inputs, so a float32 model scores float64 (or integer) data in float32 and a
    float64 model (which needs ``JAX_ENABLE_X64=1``) trains on float32 batches in float64;
    results always come back in the model's dtype. ``dtype=None`` (a hand-built flow) casts
    nothing: arrays keep their dtype and the base draws in its own.

    Attributes:
        bijector: data-to-latent bijector.
        base: a base-distribution module (``StandardNormal`` or ``DiagonalGaussian``).
        event_shape: shape of one data event; ``z`` has the same shape.
        dtype: the model's dtype (``"float32"`` or ``"float64"``), or None.

    Example:
        >>> flow = jflows.models.realnvp(event_shape=(2,))
        >>> variables = flow.init({"params": key}, x_batch, method="log_prob")
        >>> logp = flow.apply(variables, x_batch, method="log_prob")
        >>> samples = flow.apply(variables, 100, method="sample", rngs={"sample": key})
    """

    bijector: Bijector
    base: nn.Module
    event_shape: tuple[int, ...]
    dtype: Any = None

    def _input(self, x):
        """Checks the event shape and casts ``x`` to the model's dtype."""
        check_event_shape(x, self.event_shape, "Flow")
        return x if self.dtype is None else jnp.asarray(x, self.dtype)

    def forward_and_log_det(self, x: jax.Array):
        """Returns ``(z, log|det dz/dx|)``."""
        return self.bijector.forward_and_log_det(self._input(x))

    def forward(self, x: jax.Array) -> jax.Array:
        """Maps data to latent (no log-det is computed)."""
        return self.bijector.forward(self._input(x))

    def inverse(self, z: jax.Array) -> jax.Array:
        """Maps latent to data (no log-det is computed)."""
        return self.bijector.inverse(self._input(z))

    def inverse_and_log_det(self, z: jax.Array):
        """Returns ``(x, log|det dx/dz|)``."""
        return self.bijector.inverse_and_log_det(self._input(z))

    def base_log_prob(self, z: jax.Array) -> jax.Array:
        """Log-density of the base at ``z``."""
        return self.base.log_prob(self._input(z))

    def log_prob(self, x: jax.Array) -> jax.Array:
        """``log p(x)`` in nats, with the batch shape of ``x``."""
        z, logdet = self.forward_and_log_det(x)
        return self.base.log_prob(z) + logdet

    def __call__(self, x: jax.Array) -> jax.Array:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def sample(self, n: int, temperature: float = 1.0) -> jax.Array:
        """Draws ``n`` samples (stream ``sample``); ``temperature`` scales the base's std.

        Only the inverse map runs: no log-det is computed, so residual flows need no
        ``logdet`` stream here (``sample_and_log_prob`` does).
        """
        key = require_rng(self, SAMPLE)
        z = self.base.sample(key, n, temperature)
        return self.bijector.inverse(z)

    def sample_and_log_prob(self, n: int, temperature: float = 1.0):
        """Draws ``n`` samples and returns ``(x, log p(x))`` under the (tempered) model."""
        key = require_rng(self, SAMPLE)
        dist = self.base.distribution(temperature)
        z, log_pz = dist.sample_and_log_prob(seed=key, sample_shape=(n,))
        x, logdet_inv = self.bijector.inverse_and_log_det(z)
        return x, log_pz - logdet_inv
