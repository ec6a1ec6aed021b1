r"""Monotonic rational-quadratic splines with identity tails (Durkan et al. 2019, NSF).

On ``[-B, B]`` the map is a piecewise rational-quadratic function through ``K + 1`` knots
:math:`(x_k, y_k)` with :math:`x_0 = y_0 = -B`, :math:`x_K = y_K = B` and positive derivatives
:math:`\delta_k` at the knots; outside ``[-B, B]`` it is the identity. The boundary derivatives
are :math:`\delta_0 = \delta_K = 1`, so the map and its derivative are continuous everywhere and
every real input is valid.

**Parameter layout.** The unconstrained parameters of one element lie along the last axis, of
size ``3K - 1``: ``[K width logits, K height logits, K - 1 interior derivative parameters]``.
Widths and heights are ``2B (m + (1 - K m) softmax(logits))`` with ``m`` the minimum bin width
or height (as a fraction of ``2B``); interior derivatives are
``min_derivative + softplus(u + c)`` with ``c`` chosen so that ``u = 0`` gives derivative 1.
All-zero parameters are therefore the identity map, a convenient initialisation.

In bin ``k``, with :math:`w_k, h_k` the bin's width and height, :math:`s_k = h_k / w_k` and
:math:`\xi = (x - x_k) / w_k \in [0, 1]`,

.. math::
    y = y_k + \frac{h_k [s_k \xi^2 + \delta_k \xi (1 - \xi)]}
                   {s_k + (\delta_{k+1} + \delta_k - 2 s_k) \xi (1 - \xi)},\qquad
    \frac{dy}{dx} = \frac{s_k^2 [\delta_{k+1} \xi^2 + 2 s_k \xi (1 - \xi)
                    + \delta_k (1 - \xi)^2]}
                   {[s_k + (\delta_{k+1} + \delta_k - 2 s_k) \xi (1 - \xi)]^2}.

The inverse solves :math:`a \xi^2 + b \xi + c = 0` for the root in ``[0, 1]`` by the
cancellation-free form :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`.

Every function is elementwise over any leading shape: ``params`` has one extra (last) axis and
its leading axes broadcast against the input's. The branch not taken (tail or spline) is fed a
safe input (the double-``where`` trick), so gradients stay finite for any real input.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jflows.errors import ConfigError, ShapeError

DEFAULT_BOUND = 3.0
"""Default half-width ``B`` of the spline's interval ``[-B, B]``."""


class SplineKnots(NamedTuple):
    """Knots of a spline, each with shape ``batch + (K + 1,)``: positions, values, slopes."""

    x: jax.Array
    y: jax.Array
    derivatives: jax.Array


def rq_spline_num_params(num_bins: int) -> int:
    """Size ``3K - 1`` of the parameter axis of a spline with ``K = num_bins`` bins.

    Example:
        >>> rq_spline_num_params(8)
        23
    """
    if not isinstance(num_bins, int) or num_bins < 1:
        raise ConfigError(f"num_bins must be a positive int, got {num_bins!r}; pass e.g. 8")
    return 3 * num_bins - 1


def _check(params: jax.Array, bound, min_bin_width, min_bin_height, min_derivative) -> int:
    """Validates the settings and returns the number of bins ``K``."""
    size = params.shape[-1] if params.ndim else 0
    if params.ndim == 0 or size < 2 or size % 3 != 2:
        raise ShapeError(
            f"spline params must have a last axis of size 3K - 1 (K widths, K heights, K - 1 "
            f"derivatives), got shape {params.shape}; give rq_spline_num_params(K) values per "
            f"element"
        )
    num_bins = (size + 1) // 3
    try:
        b = float(bound)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise ConfigError(f"bound must be a Python number, got {bound!r}; pass e.g. 3.0") from err
    if not (math.isfinite(b) and b > 0):
        raise ConfigError(f"bound must be a finite number > 0, got {bound!r}; pass e.g. 3.0")
    for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if not 0 < value * num_bins < 1:
            raise ConfigError(
                f"{name} must be in (0, 1/K) = (0, {1 / num_bins:.4g}) for K={num_bins} bins, "
                f"got {value!r}; pass e.g. 1e-3"
            )
    if not 0 < min_derivative < 1:
        raise ConfigError(f"min_derivative must be in (0, 1), got {min_derivative!r}; pass 1e-3")
    return num_bins


def _knots_1d(logits, bound, min_size, num_bins):
    """Knot positions ``-B = t_0 < ... < t_K = B`` from softmax logits (last axis)."""
    frac = min_size + (1.0 - min_size * num_bins) * jax.nn.softmax(logits, axis=-1)
    cum = jnp.cumsum(frac[..., :-1], axis=-1)
    inner = -bound + 2.0 * bound * cum
    ones = jnp.ones(logits.shape[:-1] + (1,), logits.dtype)
    return jnp.concatenate([-bound * ones, inner, bound * ones], axis=-1)


def rq_spline_knots(
    params: jax.Array,
    bound: float = DEFAULT_BOUND,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> SplineKnots:
    """The knots ``(x_k, y_k, delta_k)`` that unconstrained ``params`` describe.

    Args:
        params: unconstrained parameters, shape ``batch + (3K - 1,)`` (layout in the module
            docstring).
        bound: half-width ``B > 0`` of the spline's interval.
        min_bin_width: minimum bin width as a fraction of ``2B``; ``K * min_bin_width < 1``.
        min_bin_height: minimum bin height as a fraction of ``2B``.
        min_derivative: minimum derivative at the interior knots, in ``(0, 1)``.

    Returns:
        ``SplineKnots(x, y, derivatives)``, each of shape ``batch + (K + 1,)``, with
        ``x[..., 0] = y[..., 0] = -B``, ``x[..., -1] = y[..., -1] = B`` and boundary
        derivatives 1.

    Example:
        >>> knots = rq_spline_knots(jnp.zeros(5), bound=2.0)  # K = 2: identity
        >>> np.round(knots.x, 6).tolist(), np.round(knots.derivatives, 6).tolist()
        ([-2.0, 0.0, 2.0], [1.0, 1.0, 1.0])
    """
    params = jnp.asarray(params)
    if not jnp.issubdtype(params.dtype, jnp.floating):
        params = params.astype(jnp.result_type(float))
    k = _check(params, bound, min_bin_width, min_bin_height, min_derivative)
    bound = float(bound)
    x = _knots_1d(params[..., :k], bound, min_bin_width, k)
    y = _knots_1d(params[..., k : 2 * k], bound, min_bin_height, k)
    shift = math.log(math.expm1(1.0 - min_derivative))  # softplus(shift) = 1 - min_derivative
    inner = min_derivative + jax.nn.softplus(params[..., 2 * k :] + shift)
    ones = jnp.ones(params.shape[:-1] + (1,), params.dtype)
    return SplineKnots(x, y, jnp.concatenate([ones, inner, ones], axis=-1))


def _prepare(v, params, bound, settings):
    """Broadcasts ``v`` and ``params``, builds the knots, and tells which elements are inside."""
    params = jnp.asarray(params)
    dtype = jnp.result_type(float, v, params)
    v, params = jnp.asarray(v, dtype), params.astype(dtype)
    if params.ndim == 0:
        _check(params, bound, *settings)  # raises the ShapeError
    try:
        batch = jnp.broadcast_shapes(v.shape, params.shape[:-1])
    except ValueError as err:
        raise ShapeError(
            f"input shape {v.shape} does not broadcast with the params' leading shape "
            f"{params.shape[:-1]}; params must have the input's shape plus one last axis"
        ) from err
    v = jnp.broadcast_to(v, batch)
    params = jnp.broadcast_to(params, batch + params.shape[-1:])
    knots = rq_spline_knots(params, bound, *settings)
    bound = float(bound)
    inside = (v >= -bound) & (v <= bound)
    safe = jnp.where(inside, v, jnp.zeros_like(v))  # the spline branch never sees the tails
    return v, safe, inside, knots


def _bin(knots_axis, v, knots: SplineKnots):
    """Bin index of ``v`` by a sum of comparisons with the interior knots, and the bin's data."""
    idx = jnp.sum(v[..., None] >= knots_axis[..., 1:-1], axis=-1)[..., None]

    def take(a, offset=0):
        return jnp.take_along_axis(a, idx + offset, axis=-1)[..., 0]

    x0, x1, y0, y1 = take(knots.x), take(knots.x, 1), take(knots.y), take(knots.y, 1)
    d0, d1 = take(knots.derivatives), take(knots.derivatives, 1)
    return x0, x1 - x0, y0, y1 - y0, d0, d1


def _log_slope(xi, s, d0, d1):
    """``log dy/dx`` inside a bin at relative position ``xi``."""
    t = xi * (1.0 - xi)
    num = d1 * xi**2 + 2.0 * s * t + d0 * (1.0 - xi) ** 2
    den = s + (d1 + d0 - 2.0 * s) * t
    return 2.0 * jnp.log(s) + jnp.log(num) - 2.0 * jnp.log(den)


def rq_spline_forward(
    x: jax.Array,
    params: jax.Array,
    bound: float = DEFAULT_BOUND,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[jax.Array, jax.Array]:
    """Applies the spline elementwise: ``y = g(x)`` and ``log|dy/dx|`` per element.

    Args:
        x: inputs of any shape (any real values; identity outside ``[-B, B]``).
        params: unconstrained parameters, shape ``x.shape + (3K - 1,)`` (or broadcastable).
        bound: half-width ``B > 0`` of the spline's interval.
        min_bin_width: minimum bin width as a fraction of ``2B``.
        min_bin_height: minimum bin height as a fraction of ``2B``.
        min_derivative: minimum derivative at the interior knots.

    Returns:
        ``(y, log_det)``, both with the broadcast input shape; ``log_det`` is elementwise
        (sum it over the event axes for a layer's log-determinant).

    Example:
        >>> params = jnp.array([0.5, -0.5, 1.0, 0.0, 0.3])  # K = 2 bins
        >>> y, ld = rq_spline_forward(jnp.array([-9.0, 0.4, 9.0]), params, bound=3.0)
        >>> y[0].item(), y[2].item(), ld[0].item()  # identity tails
        (-9.0, 9.0, 0.0)
    """
    settings = (min_bin_width, min_bin_height, min_derivative)
    x, safe, inside, knots = _prepare(x, params, bound, settings)
    x0, w, y0, h, d0, d1 = _bin(knots.x, safe, knots)
    xi = (safe - x0) / w
    xi = jnp.where(xi < 0, 0.0, jnp.where(xi > 1, 1.0, xi))  # rounding only; exact gradients
    s = h / w
    t = xi * (1.0 - xi)
    y_in = y0 + h * (s * xi**2 + d0 * t) / (s + (d1 + d0 - 2.0 * s) * t)
    log_det = _log_slope(xi, s, d0, d1)
    return jnp.where(inside, y_in, x), jnp.where(inside, log_det, jnp.zeros_like(log_det))


def rq_spline_inverse(
    y: jax.Array,
    params: jax.Array,
    bound: float = DEFAULT_BOUND,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[jax.Array, jax.Array]:
    """Inverse of :func:`rq_spline_forward`: ``x = g^{-1}(y)`` and ``log|dx/dy|`` per element.

    Args:
        y: outputs of any shape (any real values; identity outside ``[-B, B]``).
        params: the same unconstrained parameters as for the forward map.
        bound: half-width ``B > 0`` of the spline's interval.
        min_bin_width: minimum bin width as a fraction of ``2B``.
        min_bin_height: minimum bin height as a fraction of ``2B``.
        min_derivative: minimum derivative at the interior knots.

    Returns:
        ``(x, log_det)`` where ``log_det = -log|dy/dx|`` at ``x``, elementwise.

    Example:
        >>> params = jnp.array([0.5, -0.5, 1.0, 0.0, 0.3])
        >>> y, _ = rq_spline_forward(jnp.array(0.4), params)
        >>> x, _ = rq_spline_inverse(y, params)
        >>> round(x.item(), 5)
        0.4
    """
    settings = (min_bin_width, min_bin_height, min_derivative)
    y, safe, inside, knots = _prepare(y, params, bound, settings)
    x0, w, y0, h, d0, d1 = _bin(knots.y, safe, knots)
    s = h / w
    dy = safe - y0
    curv = d1 + d0 - 2.0 * s
    a = h * (s - d0) + dy * curv
    b = h * d0 - dy * curv
    c = -s * dy
    disc = jnp.maximum(b**2 - 4.0 * a * c, 0.0)
    xi = (2.0 * c) / (-b - jnp.sqrt(disc))
    xi = jnp.where(xi < 0, 0.0, jnp.where(xi > 1, 1.0, xi))  # rounding only
    x_in = x0 + xi * w
    log_det = -_log_slope(xi, s, d0, d1)
    return jnp.where(inside, x_in, y), jnp.where(inside, log_det, jnp.zeros_like(log_det))
