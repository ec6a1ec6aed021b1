r"""Masked autoregressive layers: MAF (Papamakarios et al., 2017) and IAF (Kingma et al., 2016).

An elementwise transform ``tau`` (affine or rational-quadratic spline) is applied to every
dimension with parameters from a :class:`~jflows.bijectors.made.MADE` of the **untransformed**
side, so the Jacobian is triangular in the MADE's order and its log-determinant is the sum of
the elementwise log-slopes.

* **MAF** (``direction="maf"``): data to latent in one MADE pass,
  :math:`z_i = \tau(x_i; \theta_i(x_{<i}))`, so density evaluation is fast; sampling inverts
  one dimension per pass (``D`` passes).
* **IAF** (``direction="iaf"``): latent to data in one pass,
  :math:`x_i = \tau(z_i; \theta_i(z_{<i}))`, so sampling is fast; density evaluation needs
  ``D`` passes.

The sequential direction runs ``D`` passes in a ``lax.fori_loop``: each pass recomputes every
dimension from the current estimate, and after pass ``k`` the first ``k`` dimensions of the
order are exact (they depend only on earlier, already exact ones), so after ``D`` passes the
result and its log-determinant are exact, not iterated to a tolerance.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector
from jflows.bijectors.made import MADE
from jflows.errors import ConfigError, ShapeError
from jflows.kernels.coupling import check_scale_map, log_scale_from_raw
from jflows.kernels.rational_quadratic import (
    rq_spline_forward,
    rq_spline_inverse,
    rq_spline_num_params,
)

TRANSFORMS = ("affine", "spline")
DIRECTIONS = ("maf", "iaf")


class MaskedAutoregressive(Bijector):
    r"""A masked autoregressive layer on vectors ``(..., D)``, MAF or IAF, affine or spline.

    Affine: :math:`\tau(u) = u e^{s} + t` with ``s`` bounded by ``scale_map`` (as in the
    couplings; :mod:`jflows.kernels.coupling`), two MADE outputs per dimension. Spline: the
    rational-quadratic spline of :mod:`jflows.kernels.rational_quadratic` on ``[-bound,
    bound]`` with identity tails, ``3 num_bins - 1`` outputs per dimension. The MADE's zero
    last layer makes both start as the identity.

    Attributes:
        conditioner: a :class:`MADE` (None: ``MADE()``); its ``order`` is the layer's order.
        transform: ``"affine"`` or ``"spline"``.
        direction: ``"maf"`` (one-pass ``forward``: fast density) or ``"iaf"`` (one-pass
            ``inverse``: fast sampling).
        num_bins: spline bins ``K``.
        bound: half-width ``B`` of the spline's interval.
        scale_map: affine scale parameterisation (``"tanh"``, ``"sigmoid"``, ``"exp"``).
        scale_bound: bound of the ``"tanh"`` map.
        use_context: pass ``context`` (``(..., K)`` with the batch axes in front) to the MADE.

    Example:
        >>> layer = MaskedAutoregressive(MADE((8, 8)), transform="spline", direction="iaf")
        >>> x = jax.random.normal(jax.random.key(0), (4, 3))
        >>> variables = layer.init(jax.random.key(1), x)
        >>> z, logdet = layer.apply(variables, x)  # D = 3 passes of the MADE
        >>> z.shape, logdet.shape
        ((4, 3), (4,))
    """

    conditioner: nn.Module | None = None
    transform: Literal["affine", "spline"] = "affine"
    direction: Literal["maf", "iaf"] = "maf"
    num_bins: int = 8
    bound: float = 3.0
    scale_map: str = "tanh"
    scale_bound: float = 3.0
    use_context: bool = False

    @property
    def reads_context(self) -> bool:
        return self.use_context

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"unknown transform {self.transform!r}; choose one of {TRANSFORMS}")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"unknown direction {self.direction!r}; choose one of {DIRECTIONS}")
        if self.transform == "spline":
            rq_spline_num_params(self.num_bins)  # raises for a bad num_bins
        else:
            check_scale_map(self.scale_map)
            if self.scale_map == "none":
                raise ConfigError("MaskedAutoregressive needs a scale; use scale_map='tanh'")
        super().__post_init__()

    def setup(self):
        self.made = self.conditioner if self.conditioner is not None else MADE()

    @property
    def _num_params(self) -> int:
        return 2 if self.transform == "affine" else rq_spline_num_params(self.num_bins)

    def _context(self, u: jax.Array, context: jax.Array | None):
        if u.ndim < 1:
            raise ShapeError(f"{type(self).__name__} needs vectors (..., D), got a scalar")
        if not self.use_context:
            return None
        if context is None:
            raise ShapeError(
                f"{type(self).__name__} was built with use_context=True and needs a context; "
                f"pass context=... (an array with the batch shape in front)"
            )
        context = jnp.asarray(context, u.dtype)
        target = (*u.shape[:-1], context.shape[-1]) if context.ndim else None
        try:
            return jnp.broadcast_to(context, target)
        except (TypeError, ValueError):
            raise ShapeError(
                f"{type(self).__name__}: context of shape {context.shape} does not fit data "
                f"of shape {u.shape}; give it the batch shape {u.shape[:-1]} in front"
            ) from None

    def _tau(self, u, params, inverse: bool):
        """The elementwise transform (or its inverse) and its per-element log-slope."""
        if self.transform == "spline":
            fn = rq_spline_inverse if inverse else rq_spline_forward
            return fn(u, params, bound=self.bound)
        shift, s = params[..., 0], log_scale_from_raw(params[..., 1], self.scale_map,
                                                       self.scale_bound)
        if inverse:
            return (u - shift) * jnp.exp(-s), -s
        return u * jnp.exp(s) + shift, s

    def _one_pass(self, u, context):
        """``tau(u; MADE(u))`` and its log-det: the fast direction (one MADE pass)."""
        out, per = self._tau(u, self.made(u, self._num_params, context), inverse=False)
        return out.astype(u.dtype), jnp.sum(per, axis=-1).astype(u.dtype)

    def _sequential(self, v, context):
        """Solves ``v = tau(u; MADE(u))`` for ``u``; returns ``u`` and ``log|du/dv|``.

        Pass ``k`` computes ``u = tau^{-1}(v; MADE(u))`` for every dimension from the previous
        estimate; ``D`` passes in all, the first outside the loop (at initialisation it
        creates the MADE's parameters, which the loop's passes then read as constants of a
        pure function).
        """
        num = self._num_params
        u0, per0 = self._tau(v, self.made(jnp.zeros_like(v), num, context), inverse=True)
        made, weights = self.made.clone(parent=None), self.made.variables

        def body(_, carry):
            u, _per = carry
            u, per = self._tau(v, made.apply(weights, u, num, context), inverse=True)
            return u.astype(v.dtype), per.astype(v.dtype)

        carry = (u0.astype(v.dtype), per0.astype(v.dtype))
        u, per = jax.lax.fori_loop(1, v.shape[-1], body, carry)
        return u, jnp.sum(per, axis=-1)

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        context = self._context(x, context)
        if self.direction == "maf":
            return self._one_pass(x, context)
        return self._sequential(x, context)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        context = self._context(z, context)
        if self.direction == "maf":
            return self._sequential(z, context)
        return self._one_pass(z, context)
