"""Elementwise affine and logit maps with their log-determinants.

These are the formulas behind ActNorm, the NICE scaling layer, standardisation, scaling of
image data and the logit pre-processing bijector. Every function works on arrays with any
leading batch axes; ``event_ndims`` says how many trailing axes form one event.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jflows.kernels.shapes import batch_shape, event_size


def affine_forward(x: jax.Array, shift: jax.Array, log_scale: jax.Array, event_ndims: int):
    r"""Computes :math:`z = (x + b) e^{s}` and :math:`\log|\det| = n \sum s`.

    ``shift`` (b) and ``log_scale`` (s) broadcast against the trailing axes of one event;
    n is the number of times each parameter is used in one event (e.g. H*W for per-channel
    parameters on an image).

    Args:
        x: input with shape ``batch + event``.
        shift: additive parameter, applied before the scale.
        log_scale: logarithm of the multiplicative parameter.
        event_ndims: rank of one event.

    Returns:
        ``(z, logdet)`` with ``logdet`` of the batch shape.

    Example:
        >>> z, ld = affine_forward(jnp.ones((4, 2)), jnp.zeros(2), jnp.log(2.0) * jnp.ones(2), 1)
        >>> float(ld[0])  # log 4
        1.386...
    """
    z = (x + shift) * jnp.exp(log_scale)
    reps = event_size(x, event_ndims) // max(int(jnp.size(log_scale)), 1)
    logdet = reps * jnp.sum(log_scale) * jnp.ones(batch_shape(x, event_ndims), x.dtype)
    return z, logdet


def affine_inverse(z: jax.Array, shift: jax.Array, log_scale: jax.Array, event_ndims: int):
    """Inverse of :func:`affine_forward`: ``x = z e^{-s} - b``; returns ``(x, log|dx/dz|)``."""
    x = z * jnp.exp(-log_scale) - shift
    reps = event_size(z, event_ndims) // max(int(jnp.size(log_scale)), 1)
    logdet = -reps * jnp.sum(log_scale) * jnp.ones(batch_shape(z, event_ndims), z.dtype)
    return x, logdet


def logit_forward(y: jax.Array, alpha: float, event_ndims: int):
    r"""Logit pre-processing of data in [0, 1).

    .. math::
        s = \alpha + (1 - 2\alpha) y,\quad z = \log s - \log(1 - s),\quad
        \log\left|\frac{dz}{dy}\right| = \log(1 - 2\alpha) - \log s - \log(1 - s).

    Args:
        y: data in [0, 1).
        alpha: margin that keeps ``s`` away from 0 and 1 (0.05 for natural images, 1e-6 for
            MNIST in the Residual Flows code).
        event_ndims: rank of one event.

    Returns:
        ``(z, logdet)`` summed over the event.
    """
    s = alpha + (1.0 - 2.0 * alpha) * y
    log_s, log_1ms = jnp.log(s), jnp.log1p(-s)
    z = log_s - log_1ms
    per = jnp.log1p(-2.0 * alpha) - log_s - log_1ms
    return z, jnp.sum(per, axis=tuple(range(y.ndim - event_ndims, y.ndim)))


def logit_inverse(z: jax.Array, alpha: float, event_ndims: int):
    """Inverse of :func:`logit_forward`: ``y = (sigmoid(z) - alpha) / (1 - 2 alpha)``."""
    s = jax.nn.sigmoid(z)
    y = (s - alpha) / (1.0 - 2.0 * alpha)
    # log|dy/dz| = log s + log(1 - s) - log(1 - 2 alpha), with log s = -softplus(-z).
    per = -jax.nn.softplus(-z) - jax.nn.softplus(z) - jnp.log1p(-2.0 * alpha)
    return y, jnp.sum(per, axis=tuple(range(z.ndim - event_ndims, z.ndim)))
