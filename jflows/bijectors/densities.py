r"""Learned conditional densities of surjective and stochastic layers (SurVAE flows).

A surjection's contribution is ``log p(x | z)`` (and ``- log q(z | x)`` for a stochastic
layer); these modules are those conditionals. Each holds one network of the conditioning
array ``c`` (an :class:`~jflows.bijectors.MLP` for vectors, ``event_ndims=1``, a
:class:`~jflows.bijectors.ConvNet` for channels-last images, ``event_ndims=3``) whose last
layer starts at zero, so every conditional starts as a fixed, known density (a standard normal,
a fair coin) and the layer's contribution at initialisation has a closed form.

The conditioning array and the modelled array share their batch axes and (for images) their
height and width; the network maps the last axis of ``c`` to as many numbers per position as
the modelled array needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.conditioners import MLP, ConvNet
from jflows.errors import ConfigError
from jflows.kernels.shapes import sum_event

LOG_SCALE_BOUND = 5.0
"""``|log sigma| < 5`` for every learned Gaussian scale (a soft ``tanh`` bound keeps training
from driving a scale to 0 or infinity through a single bad batch)."""

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _network(event_ndims: int, hidden: int | Sequence[int], param_dtype: Any, where: str):
    if event_ndims == 1:
        widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        return MLP(hidden=widths, param_dtype=param_dtype)
    if event_ndims == 3:
        width = hidden if isinstance(hidden, int) else max(tuple(hidden) or (1,))
        return ConvNet(hidden=width, param_dtype=param_dtype)
    raise ConfigError(f"{where} needs event_ndims 1 (vectors) or 3 (images), got {event_ndims}")


def bounded_log_scale(raw: jax.Array) -> jax.Array:
    """``B tanh(raw / B)`` with ``B =`` :data:`LOG_SCALE_BOUND`: the identity near 0."""
    return LOG_SCALE_BOUND * jnp.tanh(raw / LOG_SCALE_BOUND)


def normal_log_density(y: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    r"""Elementwise ``log N(y; mean, e^{2 log_scale})`` (not summed)."""
    u = (y - mean) * jnp.exp(-log_scale)
    return -0.5 * u * u - log_scale - HALF_LOG_2PI


class ConditionalGaussian(nn.Module):
    r"""``p(y | c) = N(y; mu(c), diag sigma(c)^2)``, with ``(mu, log sigma)`` from a network of c.

    .. math:: \log p(y \mid c) = \sum_i -\tfrac12 \big((y_i - \mu_i)/\sigma_i\big)^2
        - \log \sigma_i - \tfrac12 \log 2\pi,

    with ``log sigma`` softly bounded to ``(-5, 5)``. At initialisation ``mu = 0`` and
    ``sigma = 1``.

    Attributes:
        event_ndims: 1 (``c`` and ``y`` are vectors) or 3 (images with shared height, width).
        hidden: hidden widths of the MLP, or hidden channels of the CNN.
        param_dtype: dtype of the network's weights (None: ``c``'s float dtype).

    Example:
        >>> dist = ConditionalGaussian(event_ndims=1, hidden=(8,))
        >>> c, y = jnp.ones((3, 2)), jnp.zeros((3, 1))
        >>> variables = dist.init(key, y, c, method="log_prob")
        >>> [round(float(v), 4) for v in dist.apply(variables, y, c, method="log_prob")]
        [-0.9189, -0.9189, -0.9189]
    """

    event_ndims: int = 1
    hidden: int | Sequence[int] = (64,)
    param_dtype: Any = None

    def setup(self):
        self.net = _network(self.event_ndims, self.hidden, self.param_dtype, "ConditionalGaussian")

    def mean_and_log_scale(self, c: jax.Array, features: int) -> tuple[jax.Array, jax.Array]:
        """``(mu, log sigma)``, each with ``features`` entries on the last axis."""
        out = self.net(c, 2 * features)
        return out[..., :features], bounded_log_scale(out[..., features:])

    def log_prob(self, y: jax.Array, c: jax.Array) -> jax.Array:
        """``log p(y | c)`` summed over the event (batch axes kept)."""
        mean, log_scale = self.mean_and_log_scale(c, y.shape[-1])
        return sum_event(normal_log_density(y, mean, log_scale), self.event_ndims)

    def sample(self, key: jax.Array, c: jax.Array, features: int) -> jax.Array:
        """One draw ``y ~ p(y | c)`` with ``features`` entries on the last axis."""
        mean, log_scale = self.mean_and_log_scale(c, features)
        return mean + jnp.exp(log_scale) * jax.random.normal(key, mean.shape, mean.dtype)

    def sample_and_log_prob(
        self, key: jax.Array, c: jax.Array, features: int
    ) -> tuple[jax.Array, jax.Array]:
        """``(y, log p(y | c))`` for one draw (reparameterised: gradients flow through y)."""
        mean, log_scale = self.mean_and_log_scale(c, features)
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        y = mean + jnp.exp(log_scale) * eps
        log_p = -0.5 * eps * eps - log_scale - HALF_LOG_2PI
        return y, sum_event(log_p, self.event_ndims)


class ConditionalBernoulli(nn.Module):
    r"""``p(b | c) = Bernoulli(sigmoid(l(c)))`` elementwise for ``b`` in ``{0, 1}``.

    .. math:: \log p(b \mid c) = \sum_i b_i \log \sigma(l_i) + (1 - b_i) \log \sigma(-l_i).

    At initialisation ``l = 0``: a fair coin, ``log p = -D log 2``.

    Attributes:
        event_ndims: 1 or 3, as for :class:`ConditionalGaussian`.
        hidden: hidden widths of the MLP, or hidden channels of the CNN.
        param_dtype: dtype of the network's weights (None: ``c``'s float dtype).

    Example:
        >>> coin = ConditionalBernoulli(hidden=(8,))
        >>> b, c = jnp.array([[1.0, 0.0]]), jnp.ones((1, 2))
        >>> variables = coin.init(key, b, c, method="log_prob")
        >>> round(float(coin.apply(variables, b, c, method="log_prob")[0]), 4)  # -2 log 2
        -1.3863
    """

    event_ndims: int = 1
    hidden: int | Sequence[int] = (64,)
    param_dtype: Any = None

    def setup(self):
        self.net = _network(
            self.event_ndims, self.hidden, self.param_dtype, "ConditionalBernoulli"
        )

    def logits(self, c: jax.Array, features: int) -> jax.Array:
        """The logits ``l(c)`` of ``P(b = 1 | c)``."""
        return self.net(c, features)

    def log_prob(self, b: jax.Array, c: jax.Array) -> jax.Array:
        """``log p(b | c)`` summed over the event; ``b`` holds 0s and 1s (any dtype)."""
        logits = self.logits(c, b.shape[-1])
        b = b.astype(logits.dtype)
        elementwise = b * jax.nn.log_sigmoid(logits) + (1 - b) * jax.nn.log_sigmoid(-logits)
        return sum_event(elementwise, self.event_ndims)

    def sample(self, key: jax.Array, c: jax.Array, features: int) -> jax.Array:
        """One draw of ``b`` (0s and 1s in the logits' dtype)."""
        logits = self.logits(c, features)
        return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(logits.dtype)
