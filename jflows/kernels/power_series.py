r"""The log-det power series with exact traces, and the i-ResNet truncation bound.

For :math:`\operatorname{Lip}(g) < 1` the log-determinant of a residual map expands as

.. math::
    \log\det(I + J) = \sum_{k \ge 1} \frac{(-1)^{k+1}}{k} \operatorname{tr}(J^k).

:func:`power_series_terms` evaluates the terms with exact traces from dense Jacobians (as
from :func:`jflows.kernels.logdet_exact.event_jacobians`): the reference for the bias of the
truncated Hutchinson estimator, and for the remainder :math:`\sum_{k > n}` of a truncation.
:func:`truncation_bound` is the worst-case bound of Behrmann et al. (2019),

.. math::
    |\log\det(I + J) - PS_n| \le -d\Big(\log(1 - L) + \sum_{k=1}^{n} \frac{L^k}{k}\Big).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


def power_series_terms(jac: jax.Array, n_terms: int) -> jax.Array:
    r"""Exact series terms :math:`(-1)^{k+1}/k \operatorname{tr}(J^k)` for ``k = 1..n_terms``.

    Args:
        jac: Jacobians of shape ``batch + (d, d)``.
        n_terms: number of terms (a static Python int).

    Returns:
        Terms of shape ``batch + (n_terms,)``; their cumulative sum is the truncated series.

    Example:
        >>> t = power_series_terms(0.5 * jnp.eye(2), 60)
        >>> float(t.sum())  # 2 log 1.5
        0.8109...
    """
    eye = jnp.broadcast_to(jnp.eye(jac.shape[-1], dtype=jac.dtype), jac.shape)

    def step(power, k):
        power = power @ jac
        sign = jnp.where(k % 2 == 1, 1.0, -1.0).astype(jac.dtype)
        term = sign / k.astype(jac.dtype) * jnp.trace(power, axis1=-2, axis2=-1)
        return power, term

    _, terms = lax.scan(step, eye, jnp.arange(1, n_terms + 1))
    return jnp.moveaxis(terms, 0, -1)


def truncation_bound(lipschitz: float, dim: int, n_terms: int) -> float:
    """Worst-case error of the ``n_terms``-term series for ``Lip(g) = lipschitz < 1``.

    Example:
        >>> round(truncation_bound(0.5, 2, 5), 4)
        0.0092
    """
    partial = sum(lipschitz**k / k for k in range(1, n_terms + 1))
    return -dim * (math.log1p(-lipschitz) + partial)
