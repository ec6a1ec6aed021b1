r"""Induced mixed norms :math:`\|A\|_{p \to q} = \max_{\|v\|_p = 1} \|A v\|_q` (Residual Flows §D).

A layer normalised in :math:`\|\cdot\|_{p_i \to p_{i+1}}` keeps the whole block Lipschitz in
the chosen norms. For a Flax dense kernel ``W`` of shape ``(in, out)`` the operator is
:math:`A = W^T`: the domain (norm ``p``) is the input space and the codomain (norm ``q``) the
output space. Closed forms exist for some pairs (computed on ``W``'s input rows ``W[i, :]``
and output columns ``W[:, j]``; for a conv kernel HWIO, over every axis but the input or
output channel, which is the bound the reference code uses for convolutions):

=========  ======================================  ================================
(p, q)     operator norm                           on ``W`` of shape (in, out)
=========  ======================================  ================================
(1, 1)     max column l1 norm of A                 max_i ||W[i, :]||_1
(1, 2)     max column l2 norm of A                 max_i ||W[i, :]||_2
(1, inf)   max absolute entry                      max |W|
(2, inf)   max row l2 norm of A                    max_j ||W[:, j]||_2
(inf, inf) max row l1 norm of A                    max_j ||W[:, j]||_1
=========  ======================================  ================================

Other pairs use the generalised power method: ``u <- N_q(A v)``, ``v <- N_p(A^T u)`` and
:math:`\hat\sigma = u^T A v \le \|A\|_{p\to q}`, where ``N_q`` returns the unit vector of the
dual norm :math:`q^* = q/(q-1)` that attains :math:`\langle u, A v\rangle = \|A v\|_q`, and
``N_p`` the unit-:math:`\ell_p` vector maximising :math:`\langle A^T u, v\rangle`. The one-hot
normalisers carry the sign of the selected entry, so :math:`\hat\sigma \ge 0`. The method finds
a local maximum; use several random starts for ``p != 2`` or ``q != 2``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jflows.errors import ConfigError
from jflows.kernels.spectral import (
    Operator,
    iterate_vectors,
    l2_normalize,
    sigma_from_vectors,
)

INF = math.inf
CLOSED_FORM_PAIRS = ((1.0, 1.0), (1.0, 2.0), (1.0, INF), (2.0, INF), (INF, INF))


def check_norm_order(p: float) -> None:
    """Raises ConfigError unless ``p`` is a norm order in ``[1, inf]``."""
    if not float(p) >= 1.0:
        raise ConfigError(f"norm order must be >= 1 (or inf), got {p!r}; e.g. 2 for spectral")


def _signed_one_hot(a: jax.Array) -> jax.Array:
    flat = a.ravel()
    i = jnp.argmax(jnp.abs(flat))
    sign = jnp.where(flat[i] < 0, -1.0, 1.0).astype(a.dtype)
    return (jnp.zeros_like(flat).at[i].set(sign)).reshape(a.shape)


def _sign_nonzero(a: jax.Array) -> jax.Array:
    return jnp.where(a < 0, -1.0, 1.0).astype(a.dtype)


def _scaled_abs(a: jax.Array) -> jax.Array:
    return jnp.abs(a) / jnp.maximum(jnp.max(jnp.abs(a)), 1e-12)


def _lp_norm(a: jax.Array, p: float) -> jax.Array:
    return jnp.linalg.norm(a.ravel(), ord=p)


def normalize_domain(v: jax.Array, p: float) -> jax.Array:
    """``N_p``: the unit-``l_p`` vector ``x`` maximising ``<v, x>``."""
    if p == 2.0:
        return l2_normalize(v)
    if p == 1.0:
        return _signed_one_hot(v)
    b = _scaled_abs(v) ** (1.0 / (p - 1.0))
    return _sign_nonzero(v) * b / jnp.maximum(_lp_norm(b, p), 1e-12)


def normalize_codomain(u: jax.Array, q: float) -> jax.Array:
    """``N_q``: the unit vector of the dual norm ``q/(q-1)`` maximising ``<u, x>``."""
    if q == 2.0:
        return l2_normalize(u)
    if q == INF:
        return _signed_one_hot(u)
    if q == 1.0:
        return _sign_nonzero(u)
    b = _scaled_abs(u) ** (q - 1.0)
    return _sign_nonzero(u) * b / jnp.maximum(_lp_norm(b, q / (q - 1.0)), 1e-12)


def induced_norm_closed_form(w: jax.Array, p: float, q: float) -> jax.Array:
    """Closed-form ``||.||_{p->q}`` of a kernel ``(..., in, out)`` for the pairs in the table.

    Example:
        >>> float(induced_norm_closed_form(jnp.array([[1.0, -2.0], [3.0, 0.5]]), 1, 1))
        3.5
    """
    pair = (float(p), float(q))
    if pair not in CLOSED_FORM_PAIRS:
        raise ConfigError(
            f"no closed form for the induced norm ({p}, {q}); closed forms exist for "
            f"{CLOSED_FORM_PAIRS}; use induced_power_iteration for other pairs"
        )
    a = jnp.abs(w.reshape(-1, w.shape[-2], w.shape[-1]))
    if pair == (1.0, INF):
        return jnp.max(a)
    if pair[0] == 1.0:  # columns of A = input rows of W, norm over (spatial, out)
        return jnp.max(_lp_norm_axes(a, pair[1], axes=(0, 2)))
    order = 2.0 if pair == (2.0, INF) else 1.0  # rows of A = output columns of W
    return jnp.max(_lp_norm_axes(a, order, axes=(0, 1)))


def _lp_norm_axes(a: jax.Array, p: float, axes: tuple[int, int]) -> jax.Array:
    return jnp.sum(a**p, axis=axes) ** (1.0 / p)


def induced_power_iteration(
    matvec: Operator,
    rmatvec: Operator,
    u: jax.Array,
    v: jax.Array,
    p: float,
    q: float,
    n_iter: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Generalised power method for ``||A||_{p->q}`` (see the module docstring).

    Args:
        matvec: ``A``, input space to output space.
        rmatvec: its transpose.
        u: left vector (output space), warm start.
        v: right vector (input space), warm start.
        p: domain norm order in ``[1, inf]``.
        q: codomain norm order in ``[1, inf]``.
        n_iter: number of iterations.

    Returns:
        ``(u, v, sigma)`` with ``sigma = u^T A v``, a lower bound of the induced norm.
    """
    check_norm_order(p)
    check_norm_order(q)
    p, q = float(p), float(q)
    u, v = iterate_vectors(
        matvec,
        rmatvec,
        u,
        v,
        n_iter,
        lambda a: normalize_codomain(a, q),
        lambda a: normalize_domain(a, p),
    )
    return u, v, sigma_from_vectors(matvec, u, v)
