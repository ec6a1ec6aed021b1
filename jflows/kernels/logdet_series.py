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
  :math:`s = v + \sum_{k=1}^{K'} (-1)^k c_k w_k` is accumulated without gradient, and the
  surrogate :math:`L = \langle s, J v\rangle` (one Jacobian-vector product) has gradient
  :math:`s^T (\partial J) v`. The gradient describes the same estimator as the value:

  - roulette tail: ``K' = K`` with the roulette weights (the reference code), an unbiased
    estimate of :math:`\operatorname{tr}((I+J)^{-1}\partial J)`, the gradient of the exact
    log-det that the value estimates without bias;
  - truncated series (``tail=None``): ``K' = K - 1`` with unit weights, an unbiased estimate
    (over the probe) of :math:`\sum_{k=0}^{K-1} (-1)^k \operatorname{tr}(J^k\partial J)`,
    the exact gradient of the ``K``-term series whose estimate is returned. (Summing to
    ``K' = K`` would give the gradient of the ``(K+1)``-term series.) For a fixed probe it
    equals the derivative of the returned value whenever :math:`\partial J` commutes with
    ``J`` (e.g. a scale on ``g``), which ``tests/test_kernels_neumann_exact.py`` checks
    against ``gradient="backprop"``.
  The returned value is the series estimate itself; only its gradient is the surrogate's.
  Memory does not grow with ``K``. ``remat_surrogate=True`` makes the whole estimator one
  ``jax.custom_vjp`` (the JAX form of "backward-in-forward"): the forward pass linearises ``g``
  once and that single pass gives both ``g(x)`` and the series' vector-Jacobian products; the
  backward pass recomputes :math:`(g(x), L)` and pulls the cotangents of the block output and
  of the per-example log-dets through it, so the surrogate's tangent is never computed in the
  forward pass, nothing per term is stored, and any upstream weighting of the per-example
  log-dets is respected. Being a custom VJP it supports reverse mode only (``jax.grad``,
  ``jax.vjp``, ``jax.jacrev``); ``remat_surrogate=False`` builds the surrogate from plain JAX
  operations, which forward mode and higher derivatives can also go through.
* ``"backprop"``: differentiate through the series (static ``K``, so ``tail=None`` only).
* ``"none"``: values only, no gradient through the log-det (evaluation).
"""

from __future__ import annotations

import functools
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

    weights = (n_exact_terms, tail, geom_p, poisson_lam)
    v = lax.stop_gradient(v)
    if gradient == "neumann" and remat_surrogate:
        closed_g, consts = jax.closure_convert(g, x)
        gx, est, trips = _neumann_series(closed_g, (event_ndims, weights), x, v, n_terms, consts)
        return gx, est, SeriesInfo(n_terms, trips)

    # The loop gets no tangents: its vjp residuals and inputs are constants. With Neumann
    # gradients g(x) itself comes from the surrogate's jvp below (which also carries the
    # gradient of the block's output).
    gx, vjp_fn = jax.vjp(g, x if gradient == "none" else lax.stop_gradient(x))
    vjp_const = jax.tree_util.tree_map(lax.stop_gradient, vjp_fn)
    trips, est, s = _series_loop(vjp_const, v, n_terms, weights, event_ndims)
    info = SeriesInfo(n_terms, trips)
    if gradient == "none":
        return gx, lax.stop_gradient(est), info

    gx, sur = _output_and_surrogate(g, x, v, s, event_ndims)
    return gx, est + (sur - lax.stop_gradient(sur)), info


def _series_loop(vjp_fn, v, n_terms, weights, event_ndims):
    r"""Runs ``n_terms`` vector-Jacobian products from ``v``; returns ``(trips, estimate, s)``.

    ``estimate`` is the weighted series :math:`\sum_{k=1}^{K} c_k (-1)^{k+1}/k\, w_k^T v` and
    ``s`` the Neumann vector :math:`v + \sum_{k=1}^{K'} (-1)^k c_k w_k` with ``K' = K`` for a
    roulette tail and ``K' = K - 1`` for the truncated series (see the module docstring).
    """
    dtype = v.dtype
    truncated = weights[1] is None

    def cond(carry):
        return carry[0] < n_terms

    def body(carry):
        k, w, est, s = carry
        k = k + 1
        (w,) = vjp_fn(w)
        c = term_weight(k, *weights, dtype)
        est = est + c * _sign_over_k(k, dtype) * sum_event(w * v, event_ndims)
        if truncated:  # the K-term series' gradient needs J^0 .. J^(K-1) only
            c = jnp.where(k < n_terms, c, jnp.zeros((), dtype))
        s = s - jnp.where(k % 2 == 1, c, -c) * w
        return k, w, est, s

    init = (jnp.zeros((), jnp.int32), v, zeros_logdet(v, event_ndims), v)
    trips, _, est, s = lax.while_loop(cond, body, init)
    return trips, est, s


def _output_and_surrogate(g, x, v, s, event_ndims):
    """``(g(x), <s, J_g(x) v>)``: the block output and the Neumann surrogate (one jvp)."""
    g_out, jv = jax.jvp(g, (x,), (v,))
    return g_out, sum_event(s * jv, event_ndims)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _neumann_series(closed_g, config, x, v, n_terms, consts):
    r"""``(g(x), series estimate, loop trips)`` with Neumann-series gradients.

    ``closed_g(x, *consts)`` is the closure-converted branch. The forward pass linearises ``g``
    once: the same pass gives the block output and the vector-Jacobian products of the series.
    The backward pass recomputes :math:`(g(x), \langle s, J v\rangle)` and pulls the cotangents
    of the output and of the log-det through it, so the surrogate's tangent is only computed
    when a gradient is asked for and nothing per term is stored.
    """
    return _neumann_series_fwd(closed_g, config, x, v, n_terms, consts)[0]


def _neumann_series_fwd(closed_g, config, x, v, n_terms, consts):
    event_ndims, weights = config
    gx, vjp_fn = jax.vjp(lambda y: closed_g(y, *consts), x)
    trips, est, s = _series_loop(vjp_fn, v, n_terms, weights, event_ndims)
    return (gx, est, trips), (x, v, s, consts)


def _neumann_series_bwd(closed_g, config, residuals, cotangents):
    event_ndims, _ = config
    x, v, s, consts = residuals
    g_ct, est_ct, _ = cotangents

    def output_and_surrogate(x_in, consts_in):
        g = lambda y: closed_g(y, *consts_in)  # noqa: E731
        return _output_and_surrogate(g, x_in, v, s, event_ndims)

    _, pullback = jax.vjp(output_and_surrogate, x, consts)
    x_ct, consts_ct = pullback((g_ct, est_ct))
    return x_ct, None, None, consts_ct


_neumann_series.defvjp(_neumann_series_fwd, _neumann_series_bwd)


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
        remat_surrogate: one custom VJP that recomputes the Neumann surrogate in the backward
            pass (reverse mode only; see the module docstring).

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
