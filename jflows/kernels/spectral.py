r"""Spectral normalisation: power iteration on a linear operator and the soft rescaling.

A linear layer is the operator :math:`A: v \mapsto A v` from its **input space** to its
**output space**. Power iteration keeps a right vector ``v`` (input space) and a left vector
``u`` (output space), warm-started across calls, and alternates (Residual Flows order)

.. math::
    u \leftarrow \frac{A v}{\max(\|A v\|, \epsilon)}, \qquad
    v \leftarrow \frac{A^T u}{\max(\|A^T u\|, \epsilon)}, \qquad
    \hat\sigma = u^T A v \le \|A\|_2,

with :math:`\epsilon = 10^{-12}`. The vectors are treated as constants: :math:`\hat\sigma` is
differentiable with respect to the operator's parameters only through :math:`u^T A v`. The soft
normalisation of i-ResNet and Residual Flows is then

.. math::
    W_{\text{eff}} = W / \max(1, (1 + m)\,\hat\sigma / c), \qquad 0 < c < 1.

**Safety margin.** :math:`\hat\sigma = u^T A v` can only under-estimate :math:`\|A\|_2`
(3e-5 relative on small convolutions right after the converged initial iteration, 1.7e-4
measured after training), so with :math:`m = 0` a normalised layer can exceed ``c``. The
layers (:func:`jflows.bijectors.lipschitz.normalized_weight`) use
:data:`SPECTRAL_MARGIN` :math:`m = 10^{-3}`: the guarantee
:math:`\|W_{\text{eff}}\|_2 \le c` holds whenever :math:`\hat\sigma \ge \|A\|_2 / (1 + m)`,
i.e. whenever power iteration is within 0.1% of the exact norm, which the warm-started
refreshes keep by a wide margin (``tests/test_kernels_spectral_bound.py`` checks every layer
against exact singular values). :func:`lipschitz_scale` and :func:`spectral_normalize`
default to ``margin=0`` (the plain formula of the papers).

For a Flax dense kernel ``W`` of shape ``(in, out)`` (``y = x @ W``), :func:`dense_operator`
gives ``matvec(v) = v @ W`` with ``v`` of shape ``(in,)`` and ``rmatvec(u) = W @ u`` with ``u``
of shape ``(out,)``. Convolutions are in :mod:`jflows.kernels.spectral_conv`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jflows.errors import ConfigError

NORM_EPS = 1e-12
SPECTRAL_MARGIN = 1e-3
"""Relative safety margin ``m`` on power-iteration estimates (see the module docstring)."""
Operator = Callable[[jax.Array], jax.Array]


def check_coeff(coeff: float) -> None:
    """Raises ConfigError unless the Lipschitz coefficient lies in (0, 1)."""
    if not 0.0 < float(coeff) < 1.0:
        raise ConfigError(
            f"Lipschitz coefficient coeff={coeff!r} must lie in (0, 1) so that the residual "
            "block is invertible; use e.g. 0.9 (i-ResNet) or 0.98 (Residual Flows)"
        )


def lipschitz_scale(sigma: jax.Array, coeff: float, margin: float = 0.0) -> jax.Array:
    """The divisor ``max(1, (1 + margin) sigma / coeff)`` of the soft spectral normalisation."""
    if isinstance(coeff, int | float):
        check_coeff(coeff)
    return jnp.maximum(1.0, sigma * (1.0 + margin) / coeff)


def spectral_normalize(w: jax.Array, sigma: jax.Array, coeff: float) -> jax.Array:
    """Returns ``w / max(1, sigma / coeff)``, so the layer's norm is at most ``coeff``.

    Example:
        >>> spectral_normalize(2.0 * jnp.eye(2), jnp.asarray(2.0), 0.5)
        Array([[0.5, 0. ],
               [0. , 0.5]], dtype=float32)
    """
    return w / lipschitz_scale(sigma, coeff)


def dense_operator(w: jax.Array) -> tuple[Operator, Operator]:
    """``(matvec, rmatvec)`` of a kernel ``w`` of shape ``(in, out)`` used as ``y = x @ w``.

    ``matvec`` maps the input space ``(in,)`` to the output space ``(out,)``; ``rmatvec`` is
    its transpose.
    """
    return (lambda v: v @ w), (lambda u: w @ u)


def l2_normalize(a: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """``a / max(||a||_2, eps)`` over the whole array."""
    return a / jnp.maximum(jnp.sqrt(jnp.sum(a * a)), eps)


def constant_operator(op: Operator, example: jax.Array) -> Operator:
    """``op`` with everything it closes over put behind ``stop_gradient``."""
    op_conv, consts = jax.closure_convert(op, example)
    consts = [lax.stop_gradient(c) for c in consts]
    return lambda a: op_conv(a, *consts)


def sigma_from_vectors(matvec: Operator, u: jax.Array, v: jax.Array) -> jax.Array:
    r""":math:`\hat\sigma = u^T A v` with ``u`` and ``v`` held constant (differentiable in A)."""
    u, v = lax.stop_gradient(u), lax.stop_gradient(v)
    return jnp.sum(u * matvec(v))


def iterate_vectors(matvec, rmatvec, u, v, n_iter, normalize_u, normalize_v):
    """``n_iter`` steps of ``u <- N_u(A v)``, ``v <- N_v(A^T u)`` on constant operators."""
    mv, rmv = constant_operator(matvec, v), constant_operator(rmatvec, u)

    def step(_, uv):
        u_new = normalize_u(mv(uv[1]))
        return u_new, normalize_v(rmv(u_new))

    uv = (lax.stop_gradient(u), lax.stop_gradient(v))
    return lax.fori_loop(0, n_iter, step, uv)


def power_iteration(
    matvec: Operator, rmatvec: Operator, u: jax.Array, v: jax.Array, n_iter: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Runs ``n_iter`` power iterations from warm-start vectors (see the module docstring).

    Args:
        matvec: the operator ``A``, input space to output space (may close over parameters).
        rmatvec: its transpose.
        u: left vector, in the output space.
        v: right vector, in the input space.
        n_iter: number of iterations (0 just evaluates sigma).

    Returns:
        ``(u, v, sigma)``: updated vectors (no gradient) and ``sigma = u^T A v``.

    Example:
        >>> w = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # (in=3, out=2)
        >>> _, _, s = power_iteration(*dense_operator(w), jnp.ones(2), jnp.ones(3), 50)
        >>> round(float(s), 4)
        3.0
    """
    u, v = iterate_vectors(matvec, rmatvec, u, v, n_iter, l2_normalize, l2_normalize)
    return u, v, sigma_from_vectors(matvec, u, v)


def power_iteration_adaptive(
    matvec: Operator,
    rmatvec: Operator,
    u: jax.Array,
    v: jax.Array,
    *,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    max_iter: int = 200,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    r"""Power iteration until both vectors settle, at most ``max_iter`` steps.

    Stops after the first step where, for ``a`` in ``(u, v)`` with ``n`` entries,
    :math:`\|a - a_{\text{prev}}\|_2 / \sqrt{n} < \text{atol} + \text{rtol} \max_i |a_i|`
    (the Residual Flows rule, with :math:`\max|a_i|` in place of :math:`\max a_i`).

    Returns:
        ``(u, v, sigma, iterations)``.
    """
    mv, rmv = constant_operator(matvec, v), constant_operator(rmatvec, u)

    def settled(new, old):
        step = jnp.sqrt(jnp.sum((new - old) ** 2) / new.size)
        return step < atol + rtol * jnp.max(jnp.abs(new))

    def cond(carry):
        k, _, _, done = carry
        return jnp.logical_and(jnp.logical_not(done), k < max_iter)

    def body(carry):
        k, u_old, v_old, _ = carry
        u_new = l2_normalize(mv(v_old))
        v_new = l2_normalize(rmv(u_new))
        done = jnp.logical_and(settled(u_new, u_old), settled(v_new, v_old))
        return k + 1, u_new, v_new, done

    init = (jnp.zeros((), jnp.int32), lax.stop_gradient(u), lax.stop_gradient(v), False)
    k, u, v, _ = lax.while_loop(cond, body, init)
    return u, v, sigma_from_vectors(matvec, u, v), k
