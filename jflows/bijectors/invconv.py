"""Glow's invertible 1x1 convolution, plain or LU-parameterised."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector, param_dtype_for
from jflows.kernels.invconv import (
    conv1x1,
    lu_decompose,
    lu_weight,
    pixels_per_event,
    random_rotation,
)
from jflows.kernels.shapes import batch_shape
from jflows.names import CONSTANTS, PARAMS


class InvertibleConv1x1(Bijector):
    r"""A learned channel-mixing matrix applied at every pixel (Kingma & Dhariwal, 2018).

    ``z = x W^T`` per pixel, ``log|det| = H W log|det W|`` (see :mod:`jflows.kernels.invconv`).

    With ``lu=False`` the parameter is ``W`` (``params/weight``) and the log-det is a
    ``slogdet``. With ``lu=True`` (default) the parameters are the strictly lower ``L``,
    strictly upper ``U`` and log-magnitudes of ``U``'s diagonal; the pivoting permutation and
    the diagonal's signs are fixed at initialisation and stored in the ``constants`` collection
    (saved with the model, never trained). Both start from the same random rotation for the same
    key, so the two forms agree at initialisation.

    Guard against singular weights: in LU form ``det W = prod(sign * exp(log_s))`` cannot be 0.
    In plain form a weight that became singular gives a log-det of ``-inf`` (a non-finite
    loss), and the training step rejects every step whose loss or gradients are not finite, so
    a singular or non-finite ``W`` never reaches the parameters silently.

    Attributes:
        lu: use the LU parameterisation.
        param_dtype: dtype of the weights and of the fixed LU signs (None: the dtype of the
            data at ``init``).

    Example:
        >>> images = jax.random.normal(key, (2, 4, 4, 3))
        >>> conv = InvertibleConv1x1(lu=False)  # W itself; the default lu=True trains L, U
        >>> variables = conv.init(key, images, method="forward_and_log_det")
        >>> z, logdet = conv.apply(variables, images, method="forward_and_log_det")
        >>> x = conv.apply(variables, z, method="inverse")
        >>> bool(jnp.allclose(x, images, atol=1e-5)), logdet.shape
        (True, (2,))
    """

    lu: bool = True
    param_dtype: Any = None

    def _weight_and_log_abs_det(self, channels: int, dtype, param_dtype):
        if not self.lu:
            w = self.param("weight", lambda key: random_rotation(key, channels, param_dtype))
            w = w.astype(dtype)
            return w, jnp.linalg.slogdet(w)[1]
        # One rotation feeds both the trained and the fixed LU factors. At apply time no
        # initialiser produces a value (Flax only traces them for a shape check), so a fixed key
        # stands in there.
        key = self.make_rng(PARAMS) if self.is_initializing() else jax.random.key(0)

        def decompose():
            return lu_decompose(random_rotation(key, channels, param_dtype))

        fixed = self.variable(CONSTANTS, "lu_fixed", lambda: decompose()[1]).value
        trained = self.param("lu", lambda _: decompose()[0])
        trained = jax.tree.map(lambda a: a.astype(dtype), trained)
        return lu_weight(trained, fixed), jnp.sum(trained["log_s"])

    @nn.compact
    def __call__(self, x: jax.Array, inverse: bool = False):
        """Forward (or, with ``inverse=True``, inverse) map and its log-determinant."""
        pdt = param_dtype_for(self.param_dtype, x)
        w, log_abs_det = self._weight_and_log_abs_det(x.shape[-1], x.dtype, pdt)
        logdet = pixels_per_event(x) * log_abs_det * jnp.ones(batch_shape(x, 3), x.dtype)
        if inverse:
            return conv1x1(x, jnp.linalg.inv(w)), -logdet
        return conv1x1(x, w), logdet

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        return self(x)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        return self(z, inverse=True)
