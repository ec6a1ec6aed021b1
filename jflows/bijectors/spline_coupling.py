r"""Rational-quadratic spline coupling (Durkan et al. 2019, neural spline flows).

The last axis is split in two halves ``x = (x_a, x_b)`` (vector features, or image channels),
``x_a`` is kept and every element of ``x_b`` goes through its own monotonic rational-quadratic
spline whose ``3K - 1`` parameters the conditioner computes from ``x_a`` (and the context):

.. math::
    z_a = x_a,\qquad z_b = g_{\theta(x_a)}(x_b),\qquad
    \log|\det \partial z / \partial x| = \sum_i \log g'_{\theta_i(x_a)}(x_{b,i}).

The splines are the identity outside ``[-B, B]`` (:mod:`jflows.kernels.rational_quadratic`), so
any real input is valid, and both directions are in closed form.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector
from jflows.bijectors.conditioners import MLP, ConvNet
from jflows.bijectors.coupling import with_context
from jflows.errors import ConfigError, ShapeError
from jflows.kernels.rational_quadratic import (
    DEFAULT_BOUND,
    rq_spline_forward,
    rq_spline_inverse,
    rq_spline_num_params,
)
from jflows.kernels.shapes import sum_event


def check_spline_settings(num_bins, bound, where: str = "SplineCoupling") -> None:
    """Raises ConfigError unless ``num_bins`` is an int >= 1 and ``bound`` a finite number > 0.

    Example:
        >>> check_spline_settings(8, 0.0)
        Traceback (most recent call last):
        ...
        jflows.errors.ConfigError: SplineCoupling got bound=0.0; the splines' interval [-B, B] \
needs a finite number B > 0, e.g. 3.0
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ConfigError(f"{where} got num_bins={num_bins!r}; pass a positive int, e.g. 8")
    ok = isinstance(bound, int | float) and not isinstance(bound, bool)
    if not (ok and math.isfinite(bound) and bound > 0):
        raise ConfigError(
            f"{where} got bound={bound!r}; the splines' interval [-B, B] needs a finite "
            f"number B > 0, e.g. 3.0"
        )


class SplineCoupling(Bijector):
    r"""Coupling whose transform is a rational-quadratic spline per element (NSF).

    With ``x = (x_a, x_b)`` split along the last axis (``x_a`` has ``ceil(C/2)`` entries;
    ``parity=1`` swaps the roles), ``z_a = x_a`` and ``z_b = g(x_b)`` elementwise, where the
    spline of each element of ``x_b`` has ``num_bins`` bins on ``[-bound, bound]`` and identity
    tails. The conditioner maps ``x_a`` (with the context appended) to ``3K - 1`` unconstrained
    parameters per element of ``x_b``; its last layer starts at zero, which is the identity
    spline, so the layer starts as the identity map.

    Attributes:
        event_ndims: 1 for vectors ``(d,)`` (feature split), 3 for images ``(H, W, C)``
            (channel split).
        parity: 1 transforms the first half conditioned on the second.
        conditioner: called as ``conditioner(x_a, out_features)``; defaults to ``MLP()`` for
            vectors and ``ConvNet()`` for images.
        num_bins: bins ``K`` of every spline.
        bound: half-width ``B`` of the splines' interval ``[-B, B]``.
        use_context: condition on ``context`` (appended to the conditioner's input; see
            :func:`~jflows.bijectors.coupling.with_context`); then every call needs one.

    Example:
        >>> layer = SplineCoupling(event_ndims=1, conditioner=MLP((16,)), num_bins=4)
        >>> x = jax.random.normal(jax.random.key(0), (5, 2))
        >>> variables = layer.init(jax.random.key(1), x)
        >>> z, logdet = layer.apply(variables, x)  # zero-initialised: the identity
        >>> bool(jnp.allclose(z, x)), logdet.shape
        (True, (5,))
    """

    event_ndims: int = 1
    parity: int = 0
    conditioner: nn.Module | None = None
    num_bins: int = 8
    bound: float = DEFAULT_BOUND
    use_context: bool = False

    @property
    def reads_context(self) -> bool:
        return self.use_context

    def __post_init__(self):
        if self.event_ndims not in (1, 3):
            raise ConfigError(
                f"SplineCoupling got event_ndims={self.event_ndims!r}; use 1 for vectors (d,) "
                f"or 3 for channels-last images (H, W, C)"
            )
        if self.parity not in (0, 1):
            raise ConfigError(f"SplineCoupling got parity={self.parity!r}; use 0 or 1")
        check_spline_settings(self.num_bins, self.bound)
        super().__post_init__()

    def setup(self):
        if self.conditioner is None:
            self.net = MLP() if self.event_ndims == 1 else ConvNet()

    def _split(self, x):
        if x.ndim < self.event_ndims or x.shape[-1] < 2:
            what = "features" if self.event_ndims == 1 else "channels"
            raise ShapeError(
                f"SplineCoupling (event_ndims={self.event_ndims}) needs events with at least 2 "
                f"{what} on the last axis to split, got an input of shape {x.shape}"
            )
        k = (x.shape[-1] + 1) // 2
        a, b = x[..., :k], x[..., k:]
        return (b, a) if self.parity else (a, b)

    def _join(self, a, b):
        return jnp.concatenate((b, a) if self.parity else (a, b), axis=-1)

    def _spline_params(self, a, n_b, context):
        net = self.conditioner if self.conditioner is not None else self.net
        per = rq_spline_num_params(self.num_bins)
        out = net(with_context(a, context, self.event_ndims, self), n_b * per)
        return out.reshape((*out.shape[:-1], n_b, per))

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        a, b = self._split(x)
        params = self._spline_params(a, b.shape[-1], context)
        zb, per = rq_spline_forward(b, params, self.bound)
        return self._join(a, zb.astype(x.dtype)), sum_event(per, self.event_ndims)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        a, zb = self._split(z)
        params = self._spline_params(a, zb.shape[-1], context)
        b, per = rq_spline_inverse(zb, params, self.bound)
        return self._join(a, b.astype(z.dtype)), sum_event(per, self.event_ndims)
