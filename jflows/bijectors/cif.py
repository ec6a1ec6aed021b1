r"""Continuously indexed flows (CIF; Cornish, Caterini, Deligiannidis & Doucet, 2020)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.bijectors.conditioners import MLP, ConvNet
from jflows.bijectors.densities import ConditionalGaussian, bounded_log_scale
from jflows.errors import ConfigError, ShapeError
from jflows.kernels.shapes import sum_event
from jflows.names import NOISE, SAMPLE


def _widths(hidden: int | Sequence[int]) -> tuple[int, ...]:
    return (hidden,) if isinstance(hidden, numbers.Integral) else tuple(hidden)


class IndexedBijection(Layer):
    r"""A bijection ``f`` indexed by a continuous latent ``u``: one CIF layer (stochastic).

    With ``s(u), t(u)`` from a small network of the index (an MLP for vectors, a ConvNet for
    channels-last images, whose ``u`` has ``index_dims`` channels per pixel), the indexed map
    from data to latent and its inverse are (CIF paper, eq. 9)

    .. math::
        z = F(x; u) = f\big(e^{-s(u)} \odot x - t(u)\big), \qquad
        x = F^{-1}(z; u) = e^{s(u)} \odot \big(f^{-1}(z) + t(u)\big),

    so ``log|det dF/dx| = log|det J_f(y)| - sum_i s_i(u)`` at ``y = e^{-s(u)} x - t(u)``.
    The index has a learned approximate posterior ``q(u | x)`` (a
    :class:`~jflows.bijectors.ConditionalGaussian` of ``x``) and a learned conditional prior
    ``p(u | z)`` (a ConditionalGaussian of ``z``). The data-to-latent direction draws
    ``u ~ q(u | x)`` (stream ``noise``, reparameterised) and returns the CIF ELBO term

    .. math:: c(x) = \log|\det \partial_x F(x; u)| + \log p(u \mid z) - \log q(u \mid x),

    so that ``log p_Z(z) + c`` is a one-draw ELBO of ``log p(x)`` (whose expectation over ``q``
    is at most the exact value). The generative direction draws ``u ~ p(u | z)`` (stream
    ``sample``) and returns ``F^{-1}(z; u)``. All networks start at zero: ``s = t = 0`` and
    ``q = p = N(0, I)``, so at initialisation ``F = f`` and ``c = log|det J_f|`` exactly.

    Attributes:
        bijection: the wrapped bijection ``f`` (any jflows bijection; its streams, collections
            and context use are inherited).
        index_dims: dimensions of ``u`` (channels per pixel for images).
        event_ndims: 1 (vectors) or 3 (channels-last images).
        hidden: MLP widths (or ConvNet channels) of ``q(u | x)``, ``p(u | z)`` and ``s, t``.
        zero_init: start ``s, t`` at zero (``F = f`` at initialisation). With ``False`` their
            last layer starts at PyTorch's default, so ``F`` depends on ``u`` from the start and
            the ELBO's gradient does not vanish in expectation through the index (with ``s = t =
            0`` and ``q = p = N(0, I)`` the index starts independent of ``x`` and is a saddle).
        param_dtype: dtype of the networks' weights (None: the data's float dtype).

    Example:
        >>> from jflows.bijectors import ActNorm
        >>> layer = IndexedBijection(ActNorm(), index_dims=1, hidden=(8,))
        >>> x = jnp.array([[0.5, -1.0]])
        >>> variables = layer.init({"params": key, "noise": key}, x)
        >>> z, c = layer.apply(variables, x, rngs={"noise": jax.random.key(1)})
        >>> z.shape, c.shape, layer.kind.name, sorted(layer.rng_streams)
        ((1, 2), (1,), 'STOCHASTIC', ['noise', 'sample'])
    """

    layer_kind: ClassVar[Kind] = Kind.STOCHASTIC
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({NOISE, SAMPLE})

    bijection: Layer
    index_dims: int = 1
    event_ndims: int = 1
    hidden: int | Sequence[int] = (32,)
    zero_init: bool = True
    param_dtype: Any = None

    def __post_init__(self):
        n = self.index_dims
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ConfigError(
                f"IndexedBijection needs index_dims = a positive int (dimensions of the index "
                f"u), got index_dims={n!r}"
            )
        if self.event_ndims not in (1, 3):
            raise ConfigError(
                f"IndexedBijection needs event_ndims 1 (vectors) or 3 (channels-last images), "
                f"got {self.event_ndims!r}"
            )
        super().__post_init__()

    def sublayers(self) -> Sequence[Layer]:
        return (self.bijection,)

    def setup(self):
        self.posterior = ConditionalGaussian(self.event_ndims, self.hidden, self.param_dtype)
        self.prior = ConditionalGaussian(self.event_ndims, self.hidden, self.param_dtype)
        if self.event_ndims == 1:
            self.shift_scale = MLP(_widths(self.hidden), zero_init_last=self.zero_init,
                                   param_dtype=self.param_dtype)
        else:
            channels = self.hidden if isinstance(self.hidden, int) else max(_widths(self.hidden))
            self.shift_scale = ConvNet(channels, zero_init_last=self.zero_init,
                                       param_dtype=self.param_dtype)

    def _check(self, x: jax.Array, where: str) -> None:
        if x.ndim < self.event_ndims:
            raise ShapeError(
                f"IndexedBijection.{where} needs events of rank {self.event_ndims} (with any "
                f"leading batch axes), got shape {tuple(x.shape)}"
            )

    def scale_and_shift(self, u: jax.Array, features: int) -> tuple[jax.Array, jax.Array]:
        """``(s(u), t(u))``, each with ``features`` entries on the last axis (``s`` bounded)."""
        out = self.shift_scale(u, 2 * features)
        return bounded_log_scale(out[..., :features]), out[..., features:]

    def indexed_forward_and_log_det(
        self, x: jax.Array, u: jax.Array, context: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """``(F(x; u), log|det dF/dx|)`` for a given index ``u`` (deterministic)."""
        s, t = self.scale_and_shift(u, x.shape[-1])
        s, t = s.astype(x.dtype), t.astype(x.dtype)
        y = jnp.exp(-s) * x - t
        z, logdet = self.bijection.forward_and_log_det(y, context)
        return z, logdet - sum_event(s, self.event_ndims)

    def indexed_forward(
        self, x: jax.Array, u: jax.Array, context: jax.Array | None = None
    ) -> jax.Array:
        """``F(x; u) = f(e^{-s(u)} x - t(u))`` for a given index ``u`` (no log-det)."""
        s, t = self.scale_and_shift(u, x.shape[-1])
        return self.bijection.forward(jnp.exp(-s.astype(x.dtype)) * x - t.astype(x.dtype), context)

    def indexed_inverse(
        self, z: jax.Array, u: jax.Array, context: jax.Array | None = None
    ) -> jax.Array:
        """``F^{-1}(z; u) = e^{s(u)} (f^{-1}(z) + t(u))`` for a given index ``u``."""
        y = self.bijection.inverse(z, context)
        s, t = self.scale_and_shift(u, y.shape[-1])
        return jnp.exp(s.astype(y.dtype)) * (y + t.astype(y.dtype))

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        self._check(x, "forward_and_log_det")
        key = require_rng(self, NOISE)
        u, log_q = self.posterior.sample_and_log_prob(key, x, self.index_dims)
        z, logdet = self.indexed_forward_and_log_det(x, u, context)
        log_p = self.prior.log_prob(u, z)
        return z, (logdet + log_p - log_q).astype(x.dtype)

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Draws ``u ~ q(u | x)`` and returns ``F(x; u)`` (stochastic)."""
        self._check(x, "forward")
        key = require_rng(self, NOISE)
        return self.indexed_forward(x, self.posterior.sample(key, x, self.index_dims), context)

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Draws ``u ~ p(u | z)`` (stream ``sample``) and returns ``F^{-1}(z; u)``."""
        self._check(z, "inverse")
        key = require_rng(self, SAMPLE)
        u = self.prior.sample(key, z, self.index_dims)
        return self.indexed_inverse(z, u, context)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
