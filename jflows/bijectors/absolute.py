r"""The absolute value as an inference surjection (SurVAE flows, Nielsen et al. 2020)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.bijectors.densities import ConditionalBernoulli
from jflows.names import SAMPLE


class AbsoluteValue(Layer):
    r"""``z = |x|`` elementwise; the generative direction draws the signs.

    An inference surjection: ``x -> z`` is deterministic and ``2^D``-to-one, and ``x = (2s - 1)
    z`` with the signs ``s = 1[x >= 0]`` in ``{0, 1}^D``. The contribution is the exact

    .. math:: \log p(x \mid z) = \log p(s \mid z),

    so ``log p(x) = log p_z(|x|) + log p(s | |x|)`` is an exact density when ``p_z`` lives on
    the positive orthant.

    * ``learned_signs=False`` (default): fair signs, ``p(s | z) = 2^{-D}`` and the contribution
      is ``-D log 2``: the model is symmetric about 0. No parameters.
    * ``learned_signs=True``: ``p(s | z) = prod_i Bernoulli(s_i; sigmoid(l_i(z)))`` with the
      logits ``l(z)`` from a :class:`~jflows.bijectors.ConditionalBernoulli` of ``z = |x|`` (an
      MLP for vectors, a CNN for images), so the contribution is

      .. math:: \sum_i s_i \log \sigma(l_i(z)) + (1 - s_i) \log \sigma(-l_i(z)),

      which starts at ``-D log 2`` (the network's last layer starts at zero: a fair coin).

    :meth:`inverse` draws ``s ~ p(s | z)`` from the ``sample`` stream and returns
    ``(2s - 1) z``; ``forward(inverse(z)) == z`` for ``z >= 0``. ``x = 0`` counts as positive.

    Attributes:
        event_ndims: dimensions of one event (1 for vectors, 3 for ``(H, W, C)`` images; the
            learned signs need one of these two).
        learned_signs: learn ``p(s | z)`` (True) or use fair signs (False).
        hidden: hidden widths of the sign network's MLP, or hidden channels of its CNN.
        param_dtype: dtype of the sign network's weights (None: the input's float dtype).

    Example:
        >>> layer = AbsoluteValue()
        >>> z, c = layer.apply({}, jnp.array([[-1.0, 2.0]]))
        >>> z.tolist(), [round(float(v), 4) for v in c]
        ([[1.0, 2.0]], [-1.3863])
        >>> learned = AbsoluteValue(learned_signs=True, hidden=(8,))
        >>> variables = learned.init(key, jnp.array([[-1.0, 2.0]]))
        >>> [round(float(v), 4) for v in learned.apply(variables, jnp.array([[-1.0, 2.0]]))[1]]
        [-1.3863]
        >>> x = learned.apply(variables, z, method="inverse", rngs={"sample": key})
        >>> jnp.abs(x).tolist()
        [[1.0, 2.0]]
    """

    layer_kind: ClassVar[Kind] = Kind.INFERENCE_SURJECTION
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({SAMPLE})

    event_ndims: int = 1
    learned_signs: bool = False
    hidden: int | Sequence[int] = (64,)
    param_dtype: Any = None

    def setup(self):
        if self.learned_signs:
            self.sign_density = ConditionalBernoulli(
                event_ndims=self.event_ndims, hidden=self.hidden, param_dtype=self.param_dtype
            )

    def _dims(self, x: jax.Array) -> int:
        return math.prod(x.shape[x.ndim - self.event_ndims :])

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        z = jnp.abs(x)
        if self.learned_signs:
            signs = (x >= 0).astype(x.dtype)
            return z, self.sign_density.log_prob(signs, z)
        batch = x.shape[: x.ndim - self.event_ndims]
        return z, jnp.full(batch, -self._dims(x) * math.log(2.0), x.dtype)

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        key = require_rng(self, SAMPLE)
        if self.learned_signs:
            s = self.sign_density.sample(key, z, z.shape[-1]).astype(z.dtype)
            return (2 * s - 1) * z
        signs = jax.random.rademacher(key, z.shape, z.dtype)
        return signs * z

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
