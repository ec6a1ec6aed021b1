r"""Slicing as an inference surjection (SurVAE flows, Nielsen et al. 2020)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.bijectors.densities import ConditionalGaussian
from jflows.errors import ConfigError, ShapeError
from jflows.names import PARAMS, SAMPLE


class Slice(Layer):
    r"""``z = x[..., :keep]``; the dropped entries are modelled by a learned ``p(x_d | z)``.

    An inference surjection on the last axis (the features of a vector ``(d,)``, the channels
    of an image ``(H, W, C)``): ``x = (z, x_d)`` with ``z`` the first ``keep`` entries. The
    data-to-latent map is deterministic and the contribution is exact,

    .. math:: \log p(x) = \log p_z(z) + \log p(x_d \mid z), \qquad
        p(x_d \mid z) = \mathcal N\big(x_d;\ \mu(z), \operatorname{diag} \sigma(z)^2\big),

    with ``(mu, log sigma)`` from a :class:`~jflows.bijectors.ConditionalGaussian` of ``z``
    (an MLP for vectors, a ConvNet sharing height and width for images). At initialisation
    ``mu = 0`` and ``sigma = 1``, so the contribution is ``log N(x_d; 0, I)``. :meth:`inverse`
    draws ``x_d ~ p(. | z)`` (stream ``sample``) and appends it; the number of dropped entries
    is read from the initialised parameters (the network outputs two numbers per entry).

    Attributes:
        keep: entries of the last axis kept (``0 < keep <`` its size).
        event_ndims: 1 (vectors) or 3 (channels-last images).
        hidden: hidden widths of the MLP, or hidden channels of the ConvNet.
        param_dtype: dtype of the network's weights (None: the data's float dtype).

    Example:
        >>> layer = Slice(keep=1, hidden=(8,))
        >>> x = jnp.array([[0.5, 0.0, 1.0]])
        >>> variables = layer.init(key, x)
        >>> z, c = layer.apply(variables, x)
        >>> z.tolist(), [round(float(v), 4) for v in c]  # log N((0, 1); 0, I) at init
        ([[0.5]], [-2.3379])
        >>> layer.apply(variables, z, method="inverse", rngs={"sample": key}).shape
        (1, 3)
    """

    layer_kind: ClassVar[Kind] = Kind.INFERENCE_SURJECTION
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({SAMPLE})

    keep: int
    event_ndims: int = 1
    hidden: int | Sequence[int] = (64,)
    param_dtype: Any = None

    def __post_init__(self):
        if isinstance(self.keep, bool) or not isinstance(self.keep, numbers.Integral) or (
            self.keep < 1
        ):
            raise ConfigError(
                f"Slice needs keep = a positive int (entries of the last axis kept), "
                f"got keep={self.keep!r}"
            )
        if self.event_ndims not in (1, 3):
            raise ConfigError(
                f"Slice needs event_ndims 1 (vectors) or 3 (channels-last images), "
                f"got {self.event_ndims!r}"
            )
        super().__post_init__()

    def setup(self):
        self.density = ConditionalGaussian(self.event_ndims, self.hidden, self.param_dtype)

    def _check(self, x: jax.Array) -> None:
        if x.ndim < self.event_ndims or not self.keep < x.shape[-1]:
            raise ShapeError(
                f"Slice(keep={self.keep}) needs events of rank {self.event_ndims} whose last "
                f"axis has more than {self.keep} entries, got shape {tuple(x.shape)}; choose "
                f"keep between 1 and the last axis' size minus 1"
            )

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        self._check(x)
        z = x[..., : self.keep]
        return z, self.density.log_prob(x[..., self.keep :], z)

    def _dropped(self) -> int:
        """Entries dropped by :meth:`forward`: half the output width of the network."""
        net = self.variables.get(PARAMS, {}).get("density", {}).get("net", {})
        if not net:
            raise ConfigError(
                "Slice.inverse reads the number of dropped entries from the layer's parameters; "
                "initialise it on data first (init with method='forward_and_log_det')"
            )
        last = max(net, key=lambda name: int(name.rsplit("_", 1)[-1]))
        return net[last]["kernel"].shape[-1] // 2

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        key = require_rng(self, SAMPLE)
        dropped = self.density.sample(key, z, self._dropped())
        return jnp.concatenate([z, dropped.astype(z.dtype)], axis=-1)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")
