r"""Uniform dequantization as a stochastic layer: the first layer of every image model."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.errors import ConfigError
from jflows.kernels.dequantize import uniform_dequantize
from jflows.names import DEQUANT


class UniformDequantization(Layer):
    r"""``z = k + u`` with ``u ~ U[0, 1)^D`` for integer levels ``k`` (stream ``dequant``).

    A generative surjection: the generative direction ``k = floor(z)`` is deterministic, the
    data-to-latent direction draws ``z`` from ``q(z | k) = U[k, k + 1)``. Its contribution is

    .. math:: \log p(k \mid z) - \log q(z \mid k) = 0 - 0 = 0,

    so a model's ``log_prob`` of integer data is a single-draw estimate of the variational
    lower bound ``E_u[\log p(k + u)] \le \log P(k)`` (Theis et al. 2016): its figures are
    labelled ``..._bound``. Every call draws fresh noise from the ``dequant`` stream; give a
    fixed key for a repeatable evaluation.

    The levels may come as floats holding integers (a model casts its inputs to its dtype) or
    as integers (then JAX's default float dtype is used); the noise is drawn in that floating
    dtype and ``z`` stays below ``k + 1``.

    Attributes:
        event_ndims: dimensions of one event (3 for ``(H, W, C)`` images).
        levels: number of levels ``L``; if given, :meth:`inverse` clips to ``0 .. L-1``.

    Example:
        >>> layer = UniformDequantization(levels=17)
        >>> k = jnp.array([[[[0.0], [16.0]]]])  # one 1x2x1 image
        >>> z, c = layer.apply({}, k, rngs={"dequant": jax.random.key(0)})
        >>> bool((jnp.floor(z) == k).all()), c.shape, layer.kind.name
        (True, (1,), 'STOCHASTIC')
    """

    layer_kind: ClassVar[Kind] = Kind.STOCHASTIC
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({DEQUANT})

    event_ndims: int = 3
    levels: int | None = None

    def __post_init__(self):
        if self.levels is not None and self.levels < 2:
            raise ConfigError(f"UniformDequantization needs levels >= 2, got {self.levels}")
        super().__post_init__()

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        # integer levels: JAX's default float (float32, or float64 with x64 enabled)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
        z = uniform_dequantize(require_rng(self, DEQUANT), x, dtype)
        return z, jnp.zeros(x.shape[: x.ndim - self.event_ndims], dtype)

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self.forward_and_log_det(x)[0]

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``floor(z)`` (clipped to ``0 .. levels-1`` when ``levels`` is set), in ``z``'s dtype."""
        k = jnp.floor(z)
        return k if self.levels is None else jnp.clip(k, 0, self.levels - 1)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
