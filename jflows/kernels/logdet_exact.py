r"""Brute-force log-determinant of a residual map, for small events and for tests.

For a residual map :math:`f(x) = x + g(x)` acting independently on each event,

.. math::
    \log|\det J_f(x)| = \log|\det(I + J_g(x))|,

computed here by building the full ``d x d`` Jacobian of ``g`` for every event (``d`` is the
number of scalars in one event) with forward-mode differentiation and taking ``slogdet``. The
cost is ``d`` Jacobian-vector products and an ``O(d^3)`` factorisation per event, so this is
meant for 2-D toy data, small images in tests, and as the ground truth of the stochastic
estimators in :mod:`jflows.kernels.logdet_series`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jflows.kernels.shapes import batch_shape, event_size


def event_jacobians(
    g: Callable[[jax.Array], jax.Array], x: jax.Array, event_ndims: int
) -> tuple[jax.Array, jax.Array]:
    """Returns ``(g(x), J)`` with ``J`` the per-event Jacobian of ``g`` on flattened events.

    Args:
        g: batched map acting independently on each event of rank ``event_ndims``.
        x: input of shape ``batch + event`` (any number of batch axes, including none).
        event_ndims: rank of one event.

    Returns:
        ``g(x)`` with the shape of ``x`` and ``J`` of shape ``batch + (d, d)`` where
        ``J[..., i, j] = d g_i / d x_j`` for the flattened event.
    """
    lead = batch_shape(x, event_ndims)
    event_shape = x.shape[len(lead) :]
    d = event_size(x, event_ndims)

    def one_event(flat_event):
        out = g(flat_event.reshape((1, *event_shape))).reshape(d)
        return out, out

    flat = x.reshape((-1, d))
    jac, gx = jax.vmap(jax.jacfwd(one_event, has_aux=True))(flat)
    return gx.reshape(x.shape), jac.reshape((*lead, d, d))


def logdet_exact(
    g: Callable[[jax.Array], jax.Array], x: jax.Array, event_ndims: int
) -> tuple[jax.Array, jax.Array]:
    r"""Exact :math:`\log|\det(I + J_g(x))|` per event, by a dense Jacobian and ``slogdet``.

    Differentiable with respect to ``x`` and to anything ``g`` closes over.

    Args:
        g: batched map acting independently on each event (the residual branch).
        x: input of shape ``batch + event``.
        event_ndims: rank of one event (1 for vectors, 3 for ``(H, W, C)`` images).

    Returns:
        ``(g(x), logdet)`` with ``logdet`` of the batch shape.

    Example:
        >>> g = lambda x: 0.5 * jnp.tanh(x)
        >>> gx, ld = logdet_exact(g, jnp.zeros((3, 2)), 1)
        >>> float(ld[0])  # log det(1.5 I) in 2-D
        0.8109...
    """
    gx, jac = event_jacobians(g, x, event_ndims)
    eye = jnp.eye(jac.shape[-1], dtype=jac.dtype)
    _, logabsdet = jnp.linalg.slogdet(eye + jac)
    return gx, logabsdet
