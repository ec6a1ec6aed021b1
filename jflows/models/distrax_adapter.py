"""Exposing a trained jflows Flow as a ``distrax.Transformed`` distribution.

distrax's bijectors map base to data in ``forward``; jflows' map data to latent. This adapter
is the one place that flips the direction.
"""

from __future__ import annotations

from typing import Any

import distrax
import jax

from jflows.models.flow import Flow


class FlowBijector(distrax.Bijector):
    """A trained flow's bijector in distrax's convention (``forward``: latent to data).

    Args:
        flow: the jflows :class:`Flow`.
        variables: its variables (``params`` and any other collections).
        rngs: RNG streams for stochastic layers (e.g. ``{"logdet": key}``), or None.
    """

    def __init__(self, flow: Flow, variables: Any, rngs: dict[str, jax.Array] | None = None):
        super().__init__(event_ndims_in=len(flow.event_shape))
        self._flow, self._variables, self._rngs = flow, variables, rngs or {}

    def _apply(self, x, method):
        return self._flow.apply(self._variables, x, method=method, rngs=self._rngs)

    def forward_and_log_det(self, x: jax.Array):
        """Latent to data (jflows' inverse), with ``log|det dx/dz|``."""
        return self._apply(x, "inverse_and_log_det")

    def inverse_and_log_det(self, y: jax.Array):
        """Data to latent (jflows' forward), with ``log|det dz/dx|``."""
        return self._apply(y, "forward_and_log_det")


def to_distrax(
    flow: Flow, variables: Any, rngs: dict[str, jax.Array] | None = None
) -> distrax.Transformed:
    """Returns the flow as ``distrax.Transformed(base, FlowBijector(flow))``.

    ``log_prob`` equals ``flow.log_prob``; ``sample(seed=key, sample_shape=n)`` draws from the
    base and maps through the flow's inverse.

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = jax.random.normal(key, (8, 2))
        >>> variables = flow.init(key, x)
        >>> dist = to_distrax(flow, variables)
        >>> bool(jnp.allclose(dist.log_prob(x), flow.apply(variables, x, method="log_prob")))
        True
        >>> dist.sample(seed=jax.random.key(1), sample_shape=(100,)).shape
        (100, 2)
    """
    base = flow.apply(variables, method=lambda module: module.base.distribution())
    return distrax.Transformed(base, FlowBijector(flow, variables, rngs))
