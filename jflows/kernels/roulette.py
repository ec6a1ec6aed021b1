r"""Russian-roulette truncation of the log-det power series (Residual Flows, Chen et al. 2019).

An infinite series :math:`\sum_{k \ge 1} \Delta_k` is estimated without bias by drawing a
random integer :math:`N \sim p(N)` and reweighting the terms that are kept,

.. math::
    \sum_{k \ge 1} \Delta_k = E_N\Big[\sum_{k=1}^{N} \frac{\Delta_k}{P(N \ge k)}\Big].

With ``E`` exact terms the number of terms is :math:`K = N + E` and the weight of term ``k`` is

.. math::
    c_k = \frac{1}{P(N \ge k - E)}, \qquad P(N \ge j) := 1 \text{ for } j \le 0,

so the first ``E`` terms always have weight 1. Two laws for ``N`` follow the reference code:

* ``"geometric"``: :math:`N \in \{1, 2, \dots\}`, :math:`P(N \ge j) = (1 - p)^{j - 1}`;
* ``"poisson"``: :math:`N \in \{0, 1, \dots\}`,
  :math:`P(N \ge j) = 1 - \sum_{i < j} e^{-\lambda}\lambda^i / i! = P_{\Gamma}(j, \lambda)`,
  the regularised lower incomplete gamma function.

``tail=None`` means no roulette: exactly ``E`` terms with weight 1 (the biased i-ResNet series).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammainc

from jflows.errors import ConfigError

TAILS = (None, "geometric", "poisson")


def check_series_config(
    n_exact_terms: int, tail: str | None, geom_p: float, poisson_lam: float
) -> None:
    """Raises ConfigError for an out-of-range series configuration."""
    if isinstance(n_exact_terms, bool) or not isinstance(n_exact_terms, int) or n_exact_terms < 0:
        raise ConfigError(
            f"n_exact_terms must be a non-negative Python int, got {n_exact_terms!r}; "
            "use e.g. 2 for training and 20 for evaluation"
        )
    if tail not in TAILS:
        raise ConfigError(f"unknown roulette tail {tail!r}; choose one of {TAILS}")
    if tail == "geometric" and not 0.0 < float(geom_p) < 1.0:
        raise ConfigError(f"geom_p must lie in (0, 1), got {geom_p!r}; the reference uses 0.5")
    if tail == "poisson" and not float(poisson_lam) > 0.0:
        raise ConfigError(
            f"poisson_lam must be positive, got {poisson_lam!r}; the reference uses 2.0"
        )


def survival_prob(
    j: jax.Array, tail: str, geom_p: float = 0.5, poisson_lam: float = 2.0, dtype=jnp.float32
) -> jax.Array:
    r"""Returns :math:`P(N \ge j)` for the roulette law ``tail`` (1 for ``j <= 0``).

    Args:
        j: integer array (any shape).
        tail: ``"geometric"`` (support from 1) or ``"poisson"`` (support from 0).
        geom_p: success probability of the geometric law.
        poisson_lam: rate of the Poisson law.
        dtype: floating dtype of the result.

    Returns:
        Probabilities with the shape of ``j``.

    Example:
        >>> survival_prob(jnp.arange(4), "geometric", geom_p=0.5)
        Array([1.  , 1.  , 0.5 , 0.25], dtype=float32)
    """
    j = jnp.asarray(j)
    if tail == "geometric":
        expo = jnp.maximum(j - 1, 0).astype(dtype)
        return jnp.power(jnp.asarray(1.0 - geom_p, dtype), expo)
    if tail == "poisson":
        a = jnp.maximum(j, 1).astype(dtype)
        p = gammainc(a, jnp.asarray(poisson_lam, dtype))
        return jnp.where(j <= 0, jnp.ones((), dtype), p)
    raise ConfigError(f"survival_prob needs tail 'geometric' or 'poisson', got {tail!r}")


def term_weight(
    k: jax.Array,
    n_exact_terms: int,
    tail: str | None,
    geom_p: float = 0.5,
    poisson_lam: float = 2.0,
    dtype=jnp.float32,
) -> jax.Array:
    r"""Roulette weight :math:`c_k = 1 / P(N \ge k - E)` of term ``k >= 1``; 1 without a tail."""
    k = jnp.asarray(k)
    if tail is None:
        return jnp.ones(k.shape, dtype)
    return 1.0 / survival_prob(k - n_exact_terms, tail, geom_p, poisson_lam, dtype)


def draw_n_terms(
    key: jax.Array,
    n_exact_terms: int,
    tail: str | None,
    geom_p: float = 0.5,
    poisson_lam: float = 2.0,
) -> jax.Array:
    """Draws the number of series terms :math:`K = E + N` (int32 scalar; ``E`` without a tail).

    One draw is meant to be shared by a whole batch, as in the reference implementation.

    Example:
        >>> k = draw_n_terms(jax.random.key(0), 2, "geometric")
        >>> bool(k >= 3)
        True
    """
    if tail is None:
        return jnp.asarray(n_exact_terms, jnp.int32)
    if tail == "geometric":
        n = jax.random.geometric(key, geom_p, dtype=jnp.int32)
    else:
        n = jax.random.poisson(key, poisson_lam, dtype=jnp.int32)
    return jnp.asarray(n_exact_terms, jnp.int32) + n
