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

The adjoint solve has its own tolerance test and cap (the same ``atol``, ``rtol``,
``max_iter``) and can fail on its own: its cotangent may point along the slowest mode of
:math:`J^T` while the forward solve started next to its solution. ``on_nonconvergence`` says
what a failed solve does, in the forward pass **and** in the backward pass: ``"raise"`` raises
:class:`InverseNotConvergedError` on the host (from a ``jax.debug.callback``; under ``jit``
JAX wraps it in ``JaxRuntimeError``), ``"nan"`` returns NaN (NaN gradients for a failed
adjoint), ``"ignore"`` does nothing. A backward pass cannot return diagnostics beside the
gradient, so the adjoint's :class:`AdjointInfo` comes back as the gradient of an optional
``adjoint_tap`` argument (see :func:`fixed_point_inverse`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jflows.errors import ConfigError, InverseNotConvergedError  # noqa: F401 - re-exported

ON_NONCONVERGENCE = ("raise", "nan", "ignore")


class AdjointInfo(NamedTuple):
    """Diagnostics of the adjoint (implicit-gradient) solve, read from ``adjoint_tap``'s gradient.

    Attributes:
        iterations: updates ``lam <- x_bar - J^T lam`` performed.
        residual: ``max |lam + J^T lam - x_bar|`` at the returned ``lam``.
        converged: whether the step tolerance was met before ``max_iter`` (1.0 or 0.0).
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array

    @classmethod
    def from_tap(cls, tap_grad: jax.Array) -> AdjointInfo:
        """Unpacks the gradient of ``adjoint_tap`` (summed over solves if several shared it)."""
        return cls(tap_grad[0], tap_grad[1], tap_grad[2])


def new_adjoint_tap(dtype=jnp.float32) -> jax.Array:
    """A zero ``adjoint_tap`` for :func:`fixed_point_inverse` (differentiate with respect to it)."""
    return jnp.zeros((3,), dtype)


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


def check_solver_config(
    atol: float, rtol: float, max_iter: int, on_nonconvergence: str = "ignore"
) -> None:
    """Raises ConfigError for bad tolerances, iteration cap or failure policy."""
    if on_nonconvergence not in ON_NONCONVERGENCE:
        raise ConfigError(
            f"on_nonconvergence must be one of {ON_NONCONVERGENCE}, got {on_nonconvergence!r}"
        )
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


def raise_if_not_converged(converged, iterations, residual, what: str) -> None:
    """Host side of the ``"raise"`` policy: raises :class:`InverseNotConvergedError`."""
    if not np.all(converged):
        raise InverseNotConvergedError(
            f"the {what} did not converge: {int(np.max(iterations))} iterations, residual "
            f"{float(np.max(residual)):.3g}. Raise inverse_max_iter or loosen "
            "inverse_atol/inverse_rtol; if the residual stays large, Lip(g) is probably >= 1 "
            "(check with jflows.models.residual_diagnostics)"
        )


def _apply_policy(policy, name, what, info, *arrays):
    """Applies ``policy`` to a solve described by ``info``; returns ``arrays`` (maybe NaN)."""
    if policy == "nan":
        return tuple(jnp.where(info[2], a, jnp.nan) for a in arrays)
    if policy == "raise":
        jax.debug.callback(
            functools.partial(raise_if_not_converged, what=f"{what} of {name}"), info[2],
            info[0], info[1],
        )
    return arrays


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _solve(g_conv, atol, rtol, max_iter, policy, y, tap, *consts):
    g = lambda z: g_conv(z, *consts)  # noqa: E731
    iterations, x, converged = _iterate(lambda z: y - g(z), y, atol, rtol, max_iter)
    residual = jnp.max(jnp.abs(x + g(x) - y))
    return x, FixedPointInfo(iterations, residual, converged)


def _solve_fwd(g_conv, atol, rtol, max_iter, policy, y, tap, *consts):
    x, info = _solve(g_conv, atol, rtol, max_iter, policy, y, tap, *consts)
    return (x, info), (x, tap, consts)


def _solve_bwd(g_conv, atol, rtol, max_iter, policy, res, cotangents):
    x, tap, consts = res
    x_bar = cotangents[0]
    _, vjp_x = jax.vjp(lambda z: g_conv(z, *consts), x)
    update = lambda lam_k: x_bar - vjp_x(lam_k)[0]  # noqa: E731
    iterations, lam, converged = _iterate(update, x_bar, atol, rtol, max_iter)
    residual = jnp.max(jnp.abs(update(lam) - lam))
    _, vjp_c = jax.vjp(lambda *c: g_conv(x, *c), *consts)
    consts_bar = vjp_c(-lam) if consts else ()
    info = (iterations, residual, converged)
    name, policy = policy
    lam, *consts_bar = _apply_policy(policy, name, "adjoint (gradient) solve", info, lam,
                                     *consts_bar)
    tap_bar = jnp.stack([iterations.astype(tap.dtype), residual.astype(tap.dtype),
                         converged.astype(tap.dtype)])
    return (lam, tap_bar, *consts_bar)


_solve.defvjp(_solve_fwd, _solve_bwd)


def fixed_point_inverse(
    g: Callable[[jax.Array], jax.Array],
    y: jax.Array,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    max_iter: int = 100,
    on_nonconvergence: str = "ignore",
    adjoint_on_nonconvergence: str | None = None,
    name: str = "fixed_point_inverse",
    adjoint_tap: jax.Array | None = None,
) -> tuple[jax.Array, FixedPointInfo]:
    """Solves ``x + g(x) = y`` by fixed-point iteration (see the module docstring).

    The tolerance test runs over the whole array (all batch elements together), so a batch is
    converged only when each of its elements is.

    Args:
        g: residual branch, contractive for convergence; may close over traced parameters.
        y: right-hand side, any shape ``g`` accepts.
        atol: absolute step tolerance (Python float).
        rtol: relative step tolerance (Python float).
        max_iter: cap on the number of iterations (Python int), of each solve.
        on_nonconvergence: ``"raise"``, ``"nan"`` or ``"ignore"`` (default: the caller reads
            ``info``) for the forward solve.
        adjoint_on_nonconvergence: the same for the adjoint solve of the backward pass
            (default: ``on_nonconvergence``). Callers that check ``info`` themselves pass
            ``on_nonconvergence="ignore"`` and still want a policy here, since nothing else
            looks at the adjoint.
        name: names the solve in error messages.
        adjoint_tap: optional zero array of shape ``(3,)`` (:func:`new_adjoint_tap`); the
            gradient with respect to it is the adjoint solve's :class:`AdjointInfo`
            (``AdjointInfo.from_tap(grad)``).

    Returns:
        ``(x, info)``: the solution, differentiable with respect to ``y`` and anything ``g``
        closes over, and :class:`FixedPointInfo` diagnostics.

    Raises:
        InverseNotConvergedError: with ``"raise"``, when a solve fails (from a host callback;
            under ``jit`` it reaches the caller wrapped in ``JaxRuntimeError``).

    Example:
        >>> x, info = fixed_point_inverse(lambda x: 0.5 * jnp.sin(x), jnp.ones(3))
        >>> bool(info.converged), float(jnp.max(jnp.abs(x + 0.5 * jnp.sin(x) - 1.0))) < 1e-4
        (True, True)
    """
    adjoint = on_nonconvergence if adjoint_on_nonconvergence is None else adjoint_on_nonconvergence
    check_solver_config(atol, rtol, max_iter, on_nonconvergence)
    check_solver_config(atol, rtol, max_iter, adjoint)
    g_conv, consts = jax.closure_convert(g, y)
    tap = new_adjoint_tap(y.dtype) if adjoint_tap is None else adjoint_tap
    x, info = _solve(g_conv, float(atol), float(rtol), int(max_iter), (name, adjoint), y, tap,
                     *consts)
    (x,) = _apply_policy(on_nonconvergence, name, "fixed-point inverse", info, x)
    return x, info


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


DEFAULT_FIRST_STEP = 10.0
"""The largest first step ``max |g(y)|`` :func:`default_max_iter` plans for (data units)."""
MIN_DEFAULT_ITERATIONS = 200


def default_max_iter(lipschitz: float, tol: float, first_step: float = DEFAULT_FIRST_STEP) -> int:
    r"""An iteration cap from the Banach bound, for a branch with ``Lip(g) <= lipschitz``.

    .. math::
        k = \Big\lceil \log\big(\mathrm{tol}\,(1 - L) / s\big) / \log L \Big\rceil

    with ``s = first_step`` (10 by default: steps up to ten units of the data), so that the
    step test ``|x_k - x_{k-1}| <= tol`` is guaranteed to pass (the steps shrink like
    :math:`L^k s`, and the factor :math:`1 - L` leaves a margin); never below 200.

    Example:
        >>> default_max_iter(0.9, 1e-10)  # float64 tolerance
        263
        >>> default_max_iter(0.5, 1e-5)
        200
    """
    lip, tol = float(lipschitz), float(tol)
    if not 0.0 < lip < 1.0 or tol <= 0.0:
        return MIN_DEFAULT_ITERATIONS
    k = math.ceil(math.log(tol * (1.0 - lip) / first_step) / math.log(lip))
    return max(MIN_DEFAULT_ITERATIONS, k)
