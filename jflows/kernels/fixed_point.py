r"""Inverse of a residual map by fixed-point iteration, with implicit gradients.

To solve :math:`x + g(x) = y` for a contractive ``g`` (:math:`\operatorname{Lip}(g) = L < 1`),
iterate the Banach map

.. math::
    x_0 = y, \qquad x_{k} = y - g(x_{k-1}),

which converges geometrically: :math:`\|x_k - x^*\| \le L^k / (1 - L)\, \|x_1 - x_0\|`. The
loop stops when every element satisfies :math:`|x_k - x_{k-1}| \le a + r |x_k|` (absolute and
relative tolerances), or after ``max_iter`` iterations; it reports which happened.

Gradients come from the implicit function theorem instead of unrolling the loop. At the
solution :math:`(I + J)\,dx = dy - \partial_\theta g\, d\theta` with :math:`J = J_g(x^*)`, so for a
cotangent :math:`\bar x` the adjoint :math:`\lambda = (I + J)^{-T}\bar x` solves the fixed point
:math:`\lambda = \bar x - J^T \lambda` (same contraction rate), and

.. math::
    \bar y = \lambda, \qquad \bar\theta = -(\partial_\theta g)^T \lambda.

Anything ``g`` closes over (its parameters) is differentiated through ``jax.closure_convert``.
The :class:`FixedPointInfo` diagnostics carry no gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jflows.errors import ConfigError


class FixedPointInfo(NamedTuple):
    """Diagnostics of :func:`fixed_point_inverse` (a pytree of scalars).

    Attributes:
        iterations: number of updates ``x <- y - g(x)`` performed (int32).
        residual: ``max |x + g(x) - y|`` at the returned ``x``.
        converged: whether the step tolerance was met before ``max_iter``.
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


def check_solver_config(atol: float, rtol: float, max_iter: int) -> None:
    """Raises ConfigError for negative tolerances or a non-positive iteration cap."""
    if not (float(atol) >= 0.0 and float(rtol) >= 0.0 and float(atol) + float(rtol) > 0.0):
        raise ConfigError(
            f"tolerances must be non-negative and not both zero, got atol={atol!r}, "
            f"rtol={rtol!r}; the reference uses atol = rtol = 1e-5"
        )
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"max_iter must be a positive Python int, got {max_iter!r}; e.g. 100")


def _iterate(update, start, atol, rtol, max_iter):
    """Runs ``z <- update(z)`` from ``start`` until every step is within tolerance."""

    def cond(carry):
        k, _, done = carry
        return jnp.logical_and(jnp.logical_not(done), k < max_iter)

    def body(carry):
        k, z, _ = carry
        z_new = update(z)
        done = jnp.all(jnp.abs(z_new - z) <= atol + rtol * jnp.abs(z_new))
        return k + 1, z_new, done

    init = (jnp.zeros((), jnp.int32), start, jnp.zeros((), bool))
    return lax.while_loop(cond, body, init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _solve(g_conv, atol, rtol, max_iter, y, *consts):
    g = lambda z: g_conv(z, *consts)  # noqa: E731
    iterations, x, converged = _iterate(lambda z: y - g(z), y, atol, rtol, max_iter)
    residual = jnp.max(jnp.abs(x + g(x) - y))
    return x, FixedPointInfo(iterations, residual, converged)


def _solve_fwd(g_conv, atol, rtol, max_iter, y, *consts):
    x, info = _solve(g_conv, atol, rtol, max_iter, y, *consts)
    return (x, info), (x, consts)


def _solve_bwd(g_conv, atol, rtol, max_iter, res, cotangents):
    x, consts = res
    x_bar = cotangents[0]
    _, vjp_x = jax.vjp(lambda z: g_conv(z, *consts), x)
    _, lam, _ = _iterate(lambda lam_k: x_bar - vjp_x(lam_k)[0], x_bar, atol, rtol, max_iter)
    _, vjp_c = jax.vjp(lambda *c: g_conv(x, *c), *consts)
    consts_bar = vjp_c(-lam) if consts else ()
    return (lam, *consts_bar)


_solve.defvjp(_solve_fwd, _solve_bwd)


def fixed_point_inverse(
    g: Callable[[jax.Array], jax.Array],
    y: jax.Array,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    max_iter: int = 100,
) -> tuple[jax.Array, FixedPointInfo]:
    """Solves ``x + g(x) = y`` by fixed-point iteration (see the module docstring).

    The tolerance test runs over the whole array (all batch elements together), so a batch is
    converged only when each of its elements is.

    Args:
        g: residual branch, contractive for convergence; may close over traced parameters.
        y: right-hand side, any shape ``g`` accepts.
        atol: absolute step tolerance (Python float).
        rtol: relative step tolerance (Python float).
        max_iter: cap on the number of iterations (Python int).

    Returns:
        ``(x, info)``: the solution, differentiable with respect to ``y`` and anything ``g``
        closes over, and :class:`FixedPointInfo` diagnostics.

    Example:
        >>> x, info = fixed_point_inverse(lambda x: 0.5 * jnp.sin(x), jnp.ones(3))
        >>> bool(info.converged), float(jnp.max(jnp.abs(x + 0.5 * jnp.sin(x) - 1.0))) < 1e-4
        (True, True)
    """
    check_solver_config(atol, rtol, max_iter)
    g_conv, consts = jax.closure_convert(g, y)
    return _solve(g_conv, float(atol), float(rtol), int(max_iter), y, *consts)


def banach_iterations(lipschitz, first_step, tol) -> jax.Array:
    r"""Iterations after which the Banach bound guarantees :math:`\|x_k - x^*\| \le` ``tol``.

    .. math::
        k = \Big\lceil \log\big(\mathrm{tol}\,(1 - L) / \|x_1 - x_0\|\big) / \log L \Big\rceil.

    For :math:`L \ge 1/2` this also bounds the iterations :func:`fixed_point_inverse` needs with
    ``atol = tol`` when ``first_step`` is the largest per-event norm of :math:`x_1 - x_0` in the
    norm in which ``g`` is ``L``-Lipschitz (the step test then passes by iteration ``k``).

    Args:
        lipschitz: ``L`` in (0, 1).
        first_step: :math:`\|x_1 - x_0\| = \|g(y)\|`.
        tol: target error.

    Returns:
        An int32 count, at least 0.

    Example:
        >>> int(banach_iterations(0.5, 1.0, 1e-3))
        11
    """
    lip = jnp.asarray(lipschitz, jnp.float32)
    ratio = jnp.asarray(tol, jnp.float32) * (1.0 - lip) / jnp.asarray(first_step, jnp.float32)
    k = jnp.ceil(jnp.log(ratio) / jnp.log(lip))
    return jnp.maximum(k, 0.0).astype(jnp.int32)
