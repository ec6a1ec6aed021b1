r"""Stochastic log-det of a residual map by its power series (i-ResNet and Residual Flows).

With :math:`f(x) = x + g(x)`, :math:`J = J_g(x)` and :math:`\operatorname{Lip}(g) < 1`,

.. math::
    \log\det(I + J) = \sum_{k \ge 1} \frac{(-1)^{k+1}}{k}\, E_v[w_k^T v],
    \qquad w_0 = v,\; w_k^T = w_{k-1}^T J,

with one Hutchinson probe ``v`` per example, shared by every term. The ``w_k`` are repeated
vector-Jacobian products of a single linearisation of ``g`` at ``x``. The series has ``K``
terms: ``K = E`` (``tail=None``, the biased i-ResNet truncation) or ``K = E + N`` with one
roulette draw ``N`` per call, shared by the batch, and term weights ``c_k`` from
:mod:`jflows.kernels.roulette` (the unbiased Residual Flows estimator).

Gradients (``gradient=``):

* ``"neumann"`` (default): Theorem 2 of Chen et al. (2019). With
  :math:`(I + J)^{-1} = \sum_k (-1)^k J^k`, the vector
  :math:`s = v + \sum_{k=1}^{K} (-1)^k c_k w_k` is accumulated without gradient, and the
  surrogate :math:`L = \langle s, J v\rangle` (one Jacobian-vector product) has gradient
  :math:`s^T (\partial J) v`, an unbiased estimate of
  :math:`\operatorname{tr}((I+J)^{-1}\partial J)`.
  The returned value is the series estimate itself; only its gradient is the surrogate's.
  Memory does not grow with ``K``. ``remat_surrogate=True`` recomputes the surrogate's
  linearisation in the backward pass (the JAX form of "backward-in-forward"), valid for any
  upstream weighting of the per-example log-dets.
* ``"backprop"``: differentiate through the series (static ``K``, so ``tail=None`` only).
* ``"none"``: values only, no gradient through the log-det (evaluation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jflows.errors import ConfigError
from jflows.kernels.probes import check_probe, sample_probe
from jflows.kernels.roulette import check_series_config, draw_n_terms, term_weight
from jflows.kernels.shapes import sum_event, zeros_logdet

GRADIENTS = ("neumann", "backprop", "none")


class SeriesInfo(NamedTuple):
    """Diagnostics of one series evaluation.

    Attributes:
        n_terms: number of series terms ``K`` drawn for this call (int32 scalar).
        loop_trips: number of vector-Jacobian products the loop actually ran (int32 scalar).
    """

    n_terms: jax.Array
    loop_trips: jax.Array


def _sign_over_k(k: jax.Array, dtype) -> jax.Array:
    """``(-1)^{k+1} / k`` for an integer ``k >= 1``."""
    sign = jnp.where(k % 2 == 1, 1.0, -1.0).astype(dtype)
    return sign / k.astype(dtype)


def logdet_estimate_with_info(
    g: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    key: jax.Array,
    event_ndims: int,
    *,
    n_exact_terms: int,
    tail: str | None = None,
    geom_p: float = 0.5,
    poisson_lam: float = 2.0,
    probe: str = "gaussian",
    gradient: str = "neumann",
    remat_surrogate: bool = False,
) -> tuple[jax.Array, jax.Array, SeriesInfo]:
    """Like :func:`logdet_estimate`, and also returns :class:`SeriesInfo` diagnostics."""
    check_series_config(n_exact_terms, tail, geom_p, poisson_lam)
    check_probe(probe)
    if gradient not in GRADIENTS:
        raise ConfigError(f"unknown gradient {gradient!r}; choose one of {GRADIENTS}")
    if gradient == "backprop" and tail is not None:
        raise ConfigError(
            f"gradient='backprop' needs a static number of terms, but tail={tail!r} draws it; "
            "use gradient='neumann' with a roulette tail, or tail=None for backprop"
        )
    zeros_logdet(x, event_ndims)  # raises ShapeError early for a bad event rank
    key_n, key_v = jax.random.split(key)
    v = sample_probe(key_v, x.shape, x.dtype, probe)
    n_terms = draw_n_terms(key_n, n_exact_terms, tail, geom_p, poisson_lam)
    dot_v = lambda a: sum_event(a * v, event_ndims)  # noqa: E731

    if gradient == "backprop":
        gx, vjp_fn = jax.vjp(g, x)

        def bp_body(k, carry):
            w, est = carry
            (w,) = vjp_fn(w)
            return w, est + _sign_over_k(k, x.dtype) * dot_v(w)

        _, est = lax.fori_loop(1, n_exact_terms + 1, bp_body, (v, zeros_logdet(x, event_ndims)))
        return gx, est, SeriesInfo(n_terms, n_terms)

    # The loop gets no tangents: its vjp residuals and inputs are constants. With Neumann
    # gradients g(x) itself comes from the surrogate's jvp below (which also carries the
    # gradient of the block's output), so g's forward and backward pass run once each.
    gx, vjp_fn = jax.vjp(g, x if gradient == "none" else lax.stop_gradient(x))
    vjp_const = jax.tree_util.tree_map(lax.stop_gradient, vjp_fn)
    weight = lambda k: term_weight(k, n_exact_terms, tail, geom_p, poisson_lam, x.dtype)  # noqa: E731

    def cond(carry):
        return carry[0] < n_terms

    def body(carry):
        k, w, est, s = carry
        k = k + 1
        (w,) = vjp_const(w)
        c = weight(k)
        est = est + c * _sign_over_k(k, x.dtype) * dot_v(w)
        s = s - jnp.where(k % 2 == 1, c, -c) * w
        return k, w, est, s

    v = lax.stop_gradient(v)
    init = (jnp.zeros((), jnp.int32), v, zeros_logdet(x, event_ndims), v)
    trips, _, est, s = lax.while_loop(cond, body, init)
    info = SeriesInfo(n_terms, trips)
    if gradient == "none":
        return gx, lax.stop_gradient(est), info

    def output_and_surrogate(x_in):
        g_out, jv = jax.jvp(g, (x_in,), (v,))
        return g_out, sum_event(s * jv, event_ndims)

    if remat_surrogate:
        output_and_surrogate = jax.checkpoint(output_and_surrogate)
    gx, sur = output_and_surrogate(x)
    return gx, est + (sur - lax.stop_gradient(sur)), info


def logdet_estimate(
    g: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    key: jax.Array,
    event_ndims: int,
    *,
    n_exact_terms: int,
    tail: str | None = None,
    geom_p: float = 0.5,
    poisson_lam: float = 2.0,
    probe: str = "gaussian",
    gradient: str = "neumann",
    remat_surrogate: bool = False,
) -> tuple[jax.Array, jax.Array]:
    r"""Power-series estimate of :math:`\log\det(I + J_g(x))` per event (see module docstring).

    Args:
        g: batched residual branch acting independently on each event of rank ``event_ndims``.
        x: input of shape ``batch + event``.
        key: PRNG key for the probe and the roulette draw (one draw for the whole batch).
        event_ndims: rank of one event (1 for vectors, 3 for ``(H, W, C)`` images).
        n_exact_terms: ``E``, terms computed with weight 1 (2 in training, 20 in evaluation).
        tail: ``None`` (truncated series), ``"geometric"`` or ``"poisson"`` (roulette tail).
        geom_p: success probability of the geometric tail, in (0, 1).
        poisson_lam: rate of the Poisson tail, positive.
        probe: ``"gaussian"`` or ``"rademacher"`` Hutchinson probes.
        gradient: ``"neumann"``, ``"backprop"`` (``tail=None`` only) or ``"none"``.
        remat_surrogate: recompute the Neumann surrogate's linearisation in the backward pass.

    Returns:
        ``(g(x), logdet)``: ``g(x)`` differentiable as usual, ``logdet`` of the batch shape.

    Raises:
        ConfigError: for out-of-range settings, or backprop with a roulette tail.

    Example:
        >>> g = lambda x: 0.3 * jnp.tanh(x)
        >>> x = jnp.zeros((8, 2))
        >>> _, ld = logdet_estimate(g, x, jax.random.key(0), 1, n_exact_terms=2, tail="poisson")
        >>> ld.shape
        (8,)
    """
    gx, logdet, _ = logdet_estimate_with_info(
        g,
        x,
        key,
        event_ndims,
        n_exact_terms=n_exact_terms,
        tail=tail,
        geom_p=geom_p,
        poisson_lam=poisson_lam,
        probe=probe,
        gradient=gradient,
        remat_surrogate=remat_surrogate,
    )
    return gx, logdet
