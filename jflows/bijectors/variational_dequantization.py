r"""Variational dequantization (Flow++, Ho et al. 2019) as a stochastic layer."""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Kind, Layer, not_bijective, require_rng
from jflows.bijectors.conditioners import ConvNet
from jflows.bijectors.coupling import MaskedCoupling
from jflows.bijectors.densities import HALF_LOG_2PI
from jflows.errors import ConfigError, ShapeError
from jflows.names import DEQUANT


class VariationalDequantization(Layer):
    r"""``z = k + u`` with ``u ~ q(u | k)`` from a conditional flow (stream ``dequant``).

    For integer levels ``k`` of channels-last images ``(..., H, W, C)``, the noise is

    .. math::
        \epsilon \sim N(0, I), \qquad y = g_n \circ \dots \circ g_1(\epsilon; h(k)),
        \qquad u = \mathrm{sigmoid}(y) \in (0, 1)^D,

    where ``h(k)`` is a ConvNet of ``k / L - 0.5`` (``L = levels``; ``k`` itself when
    ``levels`` is None) to ``hidden`` channels and each ``g_i`` is a checkerboard
    :class:`~jflows.bijectors.MaskedCoupling` (alternating parity) whose conditioner also sees
    ``h(k)``. With ``p(k | z) = 1`` on ``[k, k + 1)`` the contribution is

    .. math::
        -\log q(u \mid k) = -\log N(\epsilon; 0, I) + \sum_i \log|\det \partial g_i|
        + \sum_d \big(\log s(y_d) + \log s(-y_d)\big),

    (``s`` the logistic sigmoid), a single-draw estimate whose expectation makes the model's
    ``log_prob`` a lower bound on ``log P(k)``; uniform dequantization is the special case
    ``q = U[0, 1)^D`` with contribution 0. The couplings' last layers start at zero, so at
    initialisation ``u = sigmoid(epsilon)`` (logit-normal) whatever ``k``. ``z`` stays
    strictly below ``k + 1`` in its dtype (a sum that rounds up is replaced by the largest
    number below ``k + 1``). Integer input is lifted to JAX's default float dtype, as in
    :class:`~jflows.bijectors.UniformDequantization`.

    Attributes:
        levels: number of levels ``L``; scales the network's input, and :meth:`inverse` clips
            to ``0 .. L-1``.
        hidden: channels of the feature network ``h`` and of the couplings' conditioners.
        n_couplings: number of coupling layers ``g_i``.
        param_dtype: dtype of the weights (None: the data's float dtype).

    Example:
        >>> layer = VariationalDequantization(levels=17, hidden=4, n_couplings=2)
        >>> k = jnp.array([[[[0], [16]], [[3], [7]]]], jnp.uint8)  # one 2x2x1 image
        >>> variables = layer.init({"params": key, "dequant": key}, k)
        >>> z, c = layer.apply(variables, k, rngs={"dequant": jax.random.key(1)})
        >>> bool((jnp.floor(z) == k).all()), c.shape, layer.kind.name
        (True, (1,), 'STOCHASTIC')
    """

    layer_kind: ClassVar[Kind] = Kind.STOCHASTIC
    own_rng_streams: ClassVar[frozenset[str]] = frozenset({DEQUANT})

    levels: int | None = None
    hidden: int = 32
    n_couplings: int = 4
    param_dtype: Any = None

    def __post_init__(self):
        if self.levels is not None and self.levels < 2:
            raise ConfigError(f"VariationalDequantization needs levels >= 2, got {self.levels}")
        if self.n_couplings < 0:
            raise ConfigError(
                f"VariationalDequantization needs n_couplings >= 0, got {self.n_couplings}"
            )
        super().__post_init__()

    def setup(self):
        pdt = self.param_dtype
        self.features = ConvNet(hidden=self.hidden, zero_init_last=False, param_dtype=pdt)
        self.couplings = [
            MaskedCoupling(
                mask="checkerboard",
                parity=i % 2,
                conditioner=ConvNet(hidden=self.hidden, param_dtype=pdt),
                use_context=True,
            )
            for i in range(self.n_couplings)
        ]

    def _float_levels(self, k: jax.Array) -> jax.Array:
        k = jnp.asarray(k)
        if k.ndim < 3:
            raise ShapeError(
                f"VariationalDequantization expects channels-last images (..., H, W, C), got "
                f"shape {tuple(k.shape)}"
            )
        dtype = k.dtype if jnp.issubdtype(k.dtype, jnp.floating) else jnp.result_type(float)
        return k.astype(dtype)

    def noise_and_log_q(self, eps: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(u, log q(u | k))`` for the standard-normal draw ``eps`` (shape of ``k``).

        A deterministic function of ``eps`` (the layer's forward draws ``eps`` from
        ``dequant``); ``u`` lies in ``[0, 1)``.
        """
        kf = self._float_levels(k)
        scaled = kf if self.levels is None else kf / self.levels - 0.5
        context = self.features(scaled, self.hidden)
        eps = jnp.asarray(eps, kf.dtype)
        y = eps
        log_det = jnp.zeros(kf.shape[:-3], kf.dtype)
        for coupling in self.couplings:
            y, ld = coupling.forward_and_log_det(y, context)
            log_det = log_det + ld
        log_sigmoid_grad = jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y)
        log_det = log_det + jnp.sum(log_sigmoid_grad, axis=(-3, -2, -1))
        log_normal = jnp.sum(-0.5 * eps * eps - HALF_LOG_2PI, axis=(-3, -2, -1))
        u = jnp.clip(jax.nn.sigmoid(y), 0.0, 1.0 - jnp.finfo(kf.dtype).eps)
        return u, log_normal - log_det

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        kf = self._float_levels(x)
        eps = jax.random.normal(require_rng(self, DEQUANT), kf.shape, kf.dtype)
        u, log_q = self.noise_and_log_q(eps, kf)
        z = jnp.minimum(kf + u, jnp.nextafter(kf + 1, kf))
        return z, -log_q

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``floor(z)`` (clipped to ``0 .. levels-1`` when ``levels`` is set), in ``z``'s dtype."""
        k = jnp.floor(z)
        return k if self.levels is None else jnp.clip(k, 0, self.levels - 1)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        raise not_bijective(self, "inverse_and_log_det")

