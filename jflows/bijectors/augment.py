r"""Augmentation as a generative surjection (VFlow, ANF; SurVAE flows, Nielsen et al. 2020)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.bijectors.densities import ConditionalGaussian
from jflows.errors import ConfigError, ShapeError
from jflows.names import NOISE


class Augment(Layer):
    r"""``z = (x, a)`` with ``a ~ q(a | x)`` appended on the last axis (stream ``noise``).

    A generative surjection: the generative direction ``x = z[..., :D]`` is a deterministic
    slice, so ``p(x | z) = 1`` on its image, and the data-to-latent direction draws the extra
    ``features`` entries from a learned Gaussian
    ``q(a | x) = N(a; mu(x), diag sigma(x)^2)`` (a :class:`~jflows.bijectors.ConditionalGaussian`
    of ``x``, reparameterised so gradients flow through ``a``). The contribution is

    .. math:: \log p(x \mid z) - \log q(a \mid x) = -\log q(a \mid x),

    and ``E_q[\log p_z(x, a) - \log q(a \mid x)] \le \log p(x)``: a model with this layer has an
    ELBO as ``log_prob`` (:meth:`jflows.models.Flow.iwbo` tightens it). At initialisation
    ``q = N(0, I)``, so with a standard-normal base on ``(x, a)`` every draw gives exactly
    ``log N(x; 0, I)``.

    Attributes:
        features: entries appended on the last axis (channels for images).
        event_ndims: 1 (vectors) or 3 (channels-last images).
        hidden: hidden widths of the MLP, or hidden channels of the ConvNet.
        param_dtype: dtype of the network's weights (None: the data's float dtype).

    Example:
        >>> layer = Augment(features=2, hidden=(8,))
        >>> x = jnp.array([[0.5, -1.0]])
        >>> variables = layer.init({"params": key, "noise": key}, x)
        >>> z, c = layer.apply(variables, x, rngs={"noise": jax.random.key(1)})
        >>> z.shape, bool(jnp.all(z[:, :2] == x)), layer.kind.name
        ((1, 4), True, 'STOCHASTIC')
        >>> layer.apply(variables, z, method="inverse").tolist()
        [[0.5, -1.0]]
    """

    layer_kind: ClassVar[Kind] = Kind.STOCHASTIC
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({NOISE})

    features: int
    event_ndims: int = 1
    hidden: int | Sequence[int] = (64,)
    param_dtype: Any = None

    def __post_init__(self):
        f = self.features
        if isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 1:
            raise ConfigError(
                f"Augment needs features = a positive int (entries appended on the last axis), "
                f"got features={f!r}"
            )
        if self.event_ndims not in (1, 3):
            raise ConfigError(
                f"Augment needs event_ndims 1 (vectors) or 3 (channels-last images), "
                f"got {self.event_ndims!r}"
            )
        super().__post_init__()

    def setup(self):
        self.density = ConditionalGaussian(self.event_ndims, self.hidden, self.param_dtype)

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        if x.ndim < self.event_ndims:
            raise ShapeError(
                f"Augment needs events of rank {self.event_ndims} (with any leading batch "
                f"axes), got shape {tuple(x.shape)}"
            )
        key = require_rng(self, NOISE)
        a, log_q = self.density.sample_and_log_prob(key, x, self.features)
        return jnp.concatenate([x, a.astype(x.dtype)], axis=-1), -log_q.astype(x.dtype)

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Draws ``a ~ q(a | x)`` and returns ``(x, a)`` (stochastic, like the contribution)."""
        return self.forward_and_log_det(x, context)[0]

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``z[..., :D]``: drops the appended entries (deterministic, no stream)."""
        if z.ndim < self.event_ndims or z.shape[-1] <= self.features:
            raise ShapeError(
                f"Augment(features={self.features}).inverse needs latents whose last axis has "
                f"more than {self.features} entries, got shape {tuple(z.shape)}"
            )
        return z[..., : z.shape[-1] - self.features]

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
