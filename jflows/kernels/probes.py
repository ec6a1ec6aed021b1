r"""Random probe vectors for Hutchinson trace estimation.

For any square matrix ``A`` and a random vector ``v`` with :math:`E[v v^T] = I`,

.. math::
    \operatorname{tr}(A) = E_v[v^T A v],

so one matrix-vector product per probe gives an unbiased trace estimate. Two probe laws are
offered: standard Gaussian (what the Residual Flows and i-ResNet code use) and Rademacher
(uniform signs, which has the smallest variance among probes with independent entries).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jflows.errors import ConfigError

PROBES = ("gaussian", "rademacher")


def check_probe(kind: str) -> None:
    """Raises ConfigError unless ``kind`` names a known probe law."""
    if kind not in PROBES:
        raise ConfigError(f"unknown probe {kind!r}; choose one of {PROBES}")


def sample_probe(
    key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32, kind: str = "gaussian"
) -> jax.Array:
    r"""Draws a probe array with independent entries of mean 0 and variance 1.

    Args:
        key: PRNG key.
        shape: shape of the probe (usually the shape of the batched input).
        dtype: floating dtype of the result.
        kind: ``"gaussian"`` for :math:`N(0, 1)` entries or ``"rademacher"`` for uniform
            :math:`\pm 1` entries.

    Returns:
        An array of ``shape`` and ``dtype`` with :math:`E[v v^T] = I` over each event.

    Example:
        >>> v = sample_probe(jax.random.key(0), (4, 3), kind="rademacher")
        >>> bool(jnp.all(jnp.abs(v) == 1.0))
        True
    """
    check_probe(kind)
    if kind == "gaussian":
        return jax.random.normal(key, shape, dtype)
    return jax.random.rademacher(key, shape, dtype)
