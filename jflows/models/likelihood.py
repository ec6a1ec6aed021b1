"""A log-likelihood value together with what it is (exact, ELBO or IWBO)."""

from __future__ import annotations

import math

import jax
from flax import struct

from jflows.bijectors.base import Estimate


@struct.dataclass
class LogLikelihood:
    """Per-example ``log p(x)`` (nats) or a bound on it, with its metadata.

    Returned by :meth:`jflows.models.Flow.log_likelihood`. ``value`` is a pytree leaf (so the
    result passes through ``jax.jit``); ``estimate`` and ``samples`` are static.

    Attributes:
        value: the per-example values, shape = batch shape.
        estimate: what ``value`` is (:class:`~jflows.bijectors.Estimate`): ``EXACT`` for
            bijections and inference surjections, ``BOUND`` with a stochastic layer.
        samples: the number ``K`` of importance samples behind a bound (1: the ELBO).

    Example:
        >>> result = LogLikelihood(jnp.array([-2.0]), Estimate.BOUND, 16)
        >>> result.name, [round(v, 3) for v in result.bits_per_dim(2).tolist()]
        ('IWBO (K=16)', [1.443])
    """

    value: jax.Array
    estimate: Estimate = struct.field(pytree_node=False, default=Estimate.EXACT)
    samples: int = struct.field(pytree_node=False, default=1)

    @property
    def is_bound(self) -> bool:
        """True when ``value`` is a lower bound (ELBO or IWBO)."""
        return Estimate(self.estimate) == Estimate.BOUND

    @property
    def name(self) -> str:
        """``"exact log-likelihood"``, ``"ELBO"``, ``"IWBO (K=16)"``, or the estimate's name."""
        if self.is_bound:
            return "ELBO" if self.samples == 1 else f"IWBO (K={self.samples})"
        if Estimate(self.estimate) == Estimate.EXACT:
            return "exact log-likelihood"
        return f"{Estimate(self.estimate).name.lower()} estimate of the log-likelihood"

    def bits_per_dim(self, dims: int) -> jax.Array:
        """``-value / (dims ln 2)``: bits/dim (an upper bound on it when ``value`` is a bound)."""
        return -self.value / (dims * math.log(2.0))
