r"""Importance-weighted bounds on a log-likelihood (Burda et al. 2016).

With ``K`` independent draws ``z_k ~ q(z | x)`` and log-weights
``w_k = log p(x, z_k) - log q(z_k | x)`` (one ELBO sample each),

.. math:: \mathrm{IWBO}_K = \log \frac1K \sum_{k=1}^K e^{w_k} \le \log p(x),

``IWBO_1`` is the ELBO, and ``E[IWBO_K]`` increases with ``K`` towards ``log p(x)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def importance_weighted(log_weights: jax.Array, axis: int = 0) -> jax.Array:
    """``log mean exp`` of ``log_weights`` over ``axis`` (the IWBO from its K samples).

    Example:
        >>> w = jnp.log(jnp.array([[1.0], [3.0]]))  # K = 2 weights 1 and 3
        >>> importance_weighted(w).tolist()  # log 2
        [0.693...]
    """
    k = log_weights.shape[axis]
    return jax.nn.logsumexp(log_weights, axis=axis) - jnp.asarray(
        math.log(k), log_weights.dtype
    )
