"""The bijector contract: a Flax linen module with two methods, plus the derived ones.

Direction (see DESIGN.md): ``forward`` maps data ``x`` to latent ``z`` (the normalizing
direction) and returns ``log|det dz/dx|``; ``inverse`` maps ``z`` back to ``x`` and returns
``log|det dx/dz|``. Every bijector accepts any number of leading batch axes (or none) and
returns log-determinants with the batch shape.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.errors import MissingRngError


class Bijector(nn.Module):
    """Base class of all jflows bijectors.

    Subclasses implement :meth:`forward_and_log_det` and :meth:`inverse_and_log_det`;
    :meth:`forward` and :meth:`inverse` are derived (XLA drops the unused log-det). Bijectors
    whose log-det is expensive or stochastic (residual blocks) also override :meth:`forward` and
    :meth:`inverse` to skip it, and containers (``Chain``, ``Stack``, ...) pass those calls on,
    so sampling never computes (or needs the RNG stream of) a log-det it throws away.

    Invariants checked for every bijector by ``tests/test_contract.py``:
    ``inverse(forward(x)) == x``; the forward log-det equals
    ``slogdet(jax.jacfwd(forward)(x))`` on one event; the inverse log-det is the negative
    forward log-det at the matching point; batched calls equal ``jax.vmap`` over events.

    Example:
        >>> bij = Chain([ActNorm(), Reverse()])
        >>> variables = bij.init(jax.random.key(0), x, method="forward_and_log_det")
        >>> z, logdet = bij.apply(variables, x, method="forward_and_log_det")
    """

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps data to latent; returns ``(z, log|det dz/dx|)`` (abstract)."""
        raise NotImplementedError(f"{type(self).__name__} must define forward_and_log_det")

    def inverse_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps latent to data; returns ``(x, log|det dx/dz|)`` (abstract)."""
        raise NotImplementedError(f"{type(self).__name__} must define inverse_and_log_det")

    def forward(self, x: jax.Array) -> jax.Array:
        """Maps data to latent."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, z: jax.Array) -> jax.Array:
        """Maps latent to data."""
        return self.inverse_and_log_det(z)[0]

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Same as :meth:`forward_and_log_det`."""
        return self.forward_and_log_det(x)


def require_rng(module: nn.Module, stream: str) -> jax.Array:
    """Returns a key from ``stream`` or raises MissingRngError; never falls back to ``params``."""
    if not module.has_rng(stream):
        raise MissingRngError(stream, f"{type(module).__name__} ({module.name or 'unnamed'})")
    return module.make_rng(stream)


def param_dtype_for(param_dtype: Any, x: jax.Array) -> jnp.dtype:
    """The dtype of a layer's parameters: ``param_dtype`` if given, else ``x``'s float dtype.

    Layers take ``param_dtype=None`` by default, so a bare bijector creates its parameters in
    the dtype of the data it is initialised on (float32 data: float32 parameters). The model
    factories pass their ``dtype`` explicitly.
    """
    if param_dtype is not None:
        return jnp.dtype(param_dtype)
    dtype = jnp.result_type(x)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)
