r"""Uniform dequantization of the lattice columns of vector data (counts, codes, rounded values)."""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.errors import ConfigError
from jflows.kernels.dequantize import uniform_dequantize
from jflows.names import DEQUANT


class LatticeDequantization(Layer):
    r"""``z_j = a_j + h_j (k_j + u_j)``, ``u_j ~ U[0, 1)``, on the lattice columns of vectors.

    Column ``j`` of ``columns`` holds values ``x_j = a_j + h_j k_j`` with integer
    ``k_j \in \{0, ..., L_j - 1\}`` (``offsets`` ``a``, ``spacings`` ``h``, ``levels`` ``L``; see
    :func:`jflows.data.lattice_columns`); the other columns pass through unchanged. Like
    :class:`UniformDequantization`, a generative surjection: ``inverse`` rounds down to the
    lattice, the data-to-latent direction draws ``z`` from ``q(z | x) = U[x, x + h)`` per
    lattice column. Its contribution is

    .. math:: \log p(x \mid z) - \log q(z \mid x) = 0 - \sum_j \log(1 / h_j) = \sum_j \log h_j,

    so a model's ``log_prob`` is a single-draw estimate of a lower bound on the log of the
    mixed likelihood of ``x``: the density of the continuous columns times the probability of
    the lattice values (labelled ``..._bound``), which, unlike a density on lattice values, is
    bounded above.

    Values off the lattice are rounded to the nearest lattice point first (``jflows eval``
    refuses them; see :func:`jflows.data.off_lattice_rows`).

    Attributes:
        columns: indices of the lattice columns in the event ``(d,)``.
        offsets: their smallest values ``a_j``.
        spacings: their steps ``h_j > 0``.
        levels: their numbers of lattice points ``L_j``; :meth:`inverse` clips to them.

    Example:
        >>> layer = LatticeDequantization(columns=(1,), offsets=(-1.0,), spacings=(0.5,),
        ...                               levels=(5,))
        >>> x = jnp.array([[0.3, 0.5], [2.0, -1.0]])
        >>> z, c = layer.apply({}, x, rngs={"dequant": jax.random.key(0)})
        >>> bool((layer.apply({}, z, method="inverse") == x).all()), round(float(c[0]), 4)
        (True, -0.6931)
    """

    layer_kind: ClassVar[Kind] = Kind.STOCHASTIC
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({DEQUANT})

    columns: tuple[int, ...] = ()
    offsets: tuple[float, ...] = ()
    spacings: tuple[float, ...] = ()
    levels: tuple[int, ...] = ()

    def __post_init__(self):
        sizes = {len(self.columns), len(self.offsets), len(self.spacings), len(self.levels)}
        if len(sizes) != 1:
            raise ConfigError(
                f"LatticeDequantization needs one offset, spacing and level count per column, "
                f"got {len(self.columns)} columns, {len(self.offsets)} offsets, "
                f"{len(self.spacings)} spacings and {len(self.levels)} levels"
            )
        if len(set(self.columns)) != len(self.columns) or any(c < 0 for c in self.columns):
            raise ConfigError(f"columns must be distinct indices >= 0, got {self.columns}")
        bad = [h for h in self.spacings if not (math.isfinite(h) and h > 0)]
        if bad or any(n < 1 for n in self.levels):
            raise ConfigError(
                f"spacings must be finite and positive and levels at least 1, got spacings "
                f"{self.spacings} and levels {self.levels}"
            )
        super().__post_init__()

    def _lattice(self, dtype):
        cols = np.asarray(self.columns, np.int32)
        return cols, jnp.asarray(self.offsets, dtype), jnp.asarray(self.spacings, dtype)

    def _check_width(self, x: jax.Array) -> None:
        if self.columns and max(self.columns) >= x.shape[-1]:
            raise ConfigError(
                f"LatticeDequantization's columns {self.columns} do not fit events of "
                f"{x.shape[-1]} columns (input shape {x.shape})"
            )

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        self._check_width(x)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
        x = x.astype(dtype)
        cols, a, h = self._lattice(dtype)
        contribution = jnp.full(x.shape[:-1], sum(math.log(s) for s in self.spacings), dtype)
        if not self.columns:
            return x, contribution
        k = jnp.round((x[..., cols] - a) / h)
        z_cols = a + h * uniform_dequantize(require_rng(self, DEQUANT), k, dtype)
        return x.at[..., cols].set(z_cols), contribution

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self.forward_and_log_det(x)[0]

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``a + h floor((z - a) / h)`` on the lattice columns, clipped to their levels."""
        self._check_width(z)
        if not self.columns:
            return z
        cols, a, h = self._lattice(z.dtype)
        top = jnp.asarray(self.levels, z.dtype) - 1
        k = jnp.clip(jnp.floor((z[..., cols] - a) / h), 0, top)
        return z.at[..., cols].set(a + h * k)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
