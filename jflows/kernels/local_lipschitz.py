r"""Local Lipschitz constants: the largest singular value of a map's Jacobian at many points.

For a differentiable map :math:`f` the local Lipschitz constant at :math:`x` is the spectral
norm :math:`\|J_f(x)\|_2 = \sigma_{\max}(J_f(x))`; its supremum over a set is the Lipschitz
constant of :math:`f` there. Power iteration on :math:`J^\top J` finds it without forming
:math:`J`:

.. math::
    v_{k+1} = \frac{J^\top J v_k}{\|J^\top J v_k\|},\qquad
    \hat\sigma_k = \|J^\top J v_k\|^{1/2} \le \sigma_{\max},

where :math:`Jv` is a forward-mode product (``jax.linearize``) and :math:`J^\top u` its
transpose (``jax.linear_transpose``, the reverse-mode product). :math:`\hat\sigma_k` rises to
:math:`\sigma_{\max}` at the rate :math:`(\sigma_2/\sigma_1)^{2k}`; the loop stops after
``iterations`` steps or once :math:`\hat\sigma` changes by less than ``tol`` (relative).

:func:`local_inverse_lipschitz` measures :math:`f^{-1}` at :math:`f(x)` without running
:math:`f^{-1}`: by the inverse function theorem :math:`J_{f^{-1}}(f(x)) = J_f(x)^{-1}`, whose
products are linear solves with :math:`J_f(x)` and :math:`J_f(x)^\top` (GMRES on the
forward-mode and reverse-mode products). This is for inverses without a forward-mode
derivative (fixed-point inverses with implicit gradients).

Every kernel takes ``fn`` on ONE event of any shape (it is flattened inside) and a batch of
points ``x`` of shape ``(n, *event_shape)``, runs the points under ``jax.vmap`` with
independent seeded start vectors, and returns per-point estimates. A map with per-point
parameters held fixed (a CIF index ``u_i`` at ``x_i``) is ``fn(event, args_i)`` with
``args`` a pytree whose leaves have the points' leading axis; the Jacobian is in the event only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.sparse.linalg import gmres

from jflows.errors import ConfigError, ShapeError

Operator = Callable[[jax.Array], jax.Array]


class LocalLipschitz(NamedTuple):
    r"""Per-point estimates of a kernel of this module.

    Attributes:
        values: the estimated :math:`\sigma_{\max}` per point, shape ``(n,)``.
        iterations: power-iteration steps taken per point, shape ``(n,)``.
        outputs: the map's value at each point (``fn(x_i)``, stacked), a by-product.
    """

    values: jax.Array
    iterations: jax.Array
    outputs: jax.Array


def _check(iterations: int, tol: float) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"iterations must be an int >= 1, got {iterations!r}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ConfigError(f"tol must be a finite number >= 0, got {tol!r}")


def top_singular_value(
    matvec: Operator, rmatvec: Operator, v0: jax.Array, iterations: int, tol: float
) -> tuple[jax.Array, jax.Array]:
    r"""Largest singular value of the linear map ``matvec`` (``rmatvec`` is its transpose).

    Power iteration on ``rmatvec(matvec(v))`` from ``v0`` (flat vectors) in a
    ``lax.while_loop``: at most ``iterations`` steps, fewer once the estimate changes by
    less than ``tol`` times itself (``tol=0``: once it stops changing). Returns
    ``(sigma, steps)``; a zero map gives 0.

    Example:
        >>> a = jnp.array([[3.0, 0.0], [0.0, 1.0]])
        >>> sigma, _ = jflows.kernels.top_singular_value(
        ...     lambda v: a @ v, lambda u: a.T @ u, jnp.ones(2), 100, 0.0)
        >>> round(float(sigma), 4)
        3.0
    """
    tiny = jnp.finfo(v0.dtype).tiny

    def unit(v):
        norm = jnp.linalg.norm(v)
        return v / jnp.maximum(norm, tiny), norm

    def step(v):
        w, norm = unit(rmatvec(matvec(v)))
        return jnp.where(norm > 0, w, v), jnp.sqrt(norm)

    def cond(carry):
        i, _, previous, sigma = carry
        moving = jnp.abs(sigma - previous) > tol * sigma
        return (i < iterations) & ((i < 2) | moving)

    def body(carry):
        i, v, _, sigma = carry
        v, new = step(v)
        return i + 1, v, sigma, new

    v, _ = unit(v0)
    zero = jnp.zeros((), v0.dtype)
    steps, _, _, sigma = lax.while_loop(cond, body, (jnp.int32(0), v, zero, zero))
    return sigma, steps


def _flat(fn: Callable, event_shape: tuple[int, ...], args: Any) -> Callable:
    if args is None:
        return lambda v: jnp.ravel(fn(v.reshape(event_shape)))
    return lambda v: jnp.ravel(fn(v.reshape(event_shape), args))


def _per_point(one: Callable, points: jax.Array, starts: jax.Array, args: Any):
    """``vmap`` of ``one(point, v0, args_i)`` (``args`` None: not mapped)."""
    return jax.vmap(one, in_axes=(0, 0, None if args is None else 0))(points, starts, args)


def _start_vectors(key: jax.Array, n: int, d: int, dtype) -> jax.Array:
    return jax.random.normal(key, (n, d), dtype)


def local_lipschitz(
    fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    key: jax.Array,
    *,
    iterations: int = 50,
    tol: float = 1e-6,
    args: Any = None,
) -> LocalLipschitz:
    r"""Estimates :math:`\|J_{fn}(x_i)\|_2` at every point ``x_i`` of ``x`` (``(n, *event)``).

    ``fn`` maps one event (an array of shape ``x.shape[1:]``) to an array of any shape; it
    must be differentiable in forward mode (``jax.linearize``). Start vectors are standard
    normal draws from ``key``, one per point. With ``args`` (a pytree of arrays with leading
    axis ``n``), ``fn(event, args_i)`` is measured in the event with ``args_i`` held fixed.

    Example:
        >>> a = jnp.array([[2.0, 1.0], [0.0, 1.0]])
        >>> est = jflows.kernels.local_lipschitz(lambda e: a @ e, jnp.ones((3, 2)), key)
        >>> [round(float(s), 4) for s in est.values]  # sigma_max of a for every point
        [2.2882, 2.2882, 2.2882]
    """
    _check(iterations, tol)
    x = jnp.asarray(x)
    event_shape, d = x.shape[1:], math.prod(x.shape[1:])

    def one(point, v0, a):
        out, jvp = jax.linearize(_flat(fn, event_shape, a), point)
        vjp_t = jax.linear_transpose(jvp, point)
        return (*top_singular_value(jvp, lambda u: vjp_t(u)[0], v0, iterations, tol), out)

    points = x.reshape(x.shape[0], d)
    starts = _start_vectors(key, x.shape[0], d, points.dtype)
    values, steps, out = _per_point(one, points, starts, args)
    event = jax.ShapeDtypeStruct(event_shape, x.dtype)
    if args is None:
        out_shape = jax.eval_shape(fn, event).shape
    else:
        one_args = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), args)
        out_shape = jax.eval_shape(fn, event, one_args).shape
    return LocalLipschitz(values, steps, out.reshape(x.shape[0], *out_shape))


def local_inverse_lipschitz(
    fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    key: jax.Array,
    *,
    iterations: int = 50,
    tol: float = 1e-6,
    solve_tol: float | None = None,
    args: Any = None,
) -> LocalLipschitz:
    r"""Estimates :math:`\|J_{fn^{-1}}(fn(x_i))\|_2 = 1/\sigma_{\min}(J_{fn}(x_i))` per point.

    ``fn`` is a bijection on one event (output of the event's size). Power iteration runs on
    :math:`J^{-1}` (:math:`J = J_{fn}(x_i)`), whose products are GMRES solves with the
    forward-mode product :math:`Jv` and its transpose, to relative tolerance ``solve_tol``
    (default: 10 times the dtype's machine epsilon). Use it when ``fn^{-1}`` has no
    forward-mode derivative; the two agree wherever ``fn^{-1}`` is exact. ``args`` as for
    :func:`local_lipschitz`.

    Example:
        >>> a = jnp.array([[2.0, 1.0], [0.0, 1.0]])
        >>> est = jflows.kernels.local_inverse_lipschitz(lambda e: a @ e, jnp.ones((1, 2)), key)
        >>> round(float(est.values[0]), 4)  # sigma_max of inv(a)
        1.1441
    """
    _check(iterations, tol)
    x = jnp.asarray(x)
    event_shape, d = x.shape[1:], math.prod(x.shape[1:])
    rtol = 10 * float(jnp.finfo(x.dtype).eps) if solve_tol is None else solve_tol
    restart = min(d, 20)

    def solver(op):
        return lambda b: gmres(op, b, tol=rtol, atol=0.0, restart=restart, maxiter=8 * d)[0]

    def one(point, v0, a):
        out, jvp = jax.linearize(_flat(fn, event_shape, a), point)
        if out.shape != point.shape:
            raise ShapeError(
                f"local_inverse_lipschitz needs a map of an event onto one of the same size, "
                f"got {d} inputs and {out.size} outputs; measure "
                f"the inverse directly with local_lipschitz"
            )
        vjp_t = jax.linear_transpose(jvp, point)
        inv, inv_t = solver(jvp), solver(lambda u: vjp_t(u)[0])
        return (*top_singular_value(inv, inv_t, v0, iterations, tol), out)

    points = x.reshape(x.shape[0], d)
    starts = _start_vectors(key, x.shape[0], d, points.dtype)
    values, steps, out = _per_point(one, points, starts, args)
    return LocalLipschitz(values, steps, out.reshape(x.shape))
