r"""The MintNet layer: masked convolutions with a triangular Jacobian (Song et al., 2019)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector, param_dtype_for
from jflows.errors import ConfigError, ShapeError
from jflows.kernels.fixed_point import check_solver_config
from jflows.kernels.masked_conv import ACTIVATIONS, MintWeights, mint_forward, mint_inverse
from jflows.kernels.shapes import sum_event
from jflows.names import DIAGNOSTICS

DEFAULT_MAX_ITER = 500
"""Iteration cap of the damped inverse when ``inverse_max_iter`` is None (the loop stops as
soon as the tolerance is met; MintNet's reference samples with a fixed 100 iterations)."""


class MintLayer(Bijector):
    r"""``z = t * x + W3 * act(W2 * act(W1 * x + b1) + b2) + b3`` with masked convolutions.

    The kernels are masked so that the Jacobian is lower triangular over the pixel-channel order
    (raster order of pixels, then channels; ``upper=True``: upper triangular), and the centre
    taps of ``W2`` take the signs that make every term of the diagonal non-negative, so with
    ``t = exp(log_t) > 0`` the diagonal is positive and

    .. math::
        \log|\det \partial z / \partial x| = \sum_{p, c} \log d_{p,c}(x)

    exactly (:mod:`jflows.kernels.masked_conv` has the formula). One layer only sees earlier
    pixels; pair a lower and an upper layer so every output depends on every input pixel.

    Inverse: MintNet's damped iteration :math:`x \leftarrow x - \alpha (f(x) - z)/d(x)` in a
    ``lax.while_loop`` through :func:`~jflows.kernels.fixed_point.fixed_point_inverse`, with
    the residual blocks' conventions: tolerances, implicit gradients, a
    :class:`~jflows.kernels.FixedPointInfo` sown into ``diagnostics`` (iterations, residual
    ``max |alpha (f(x) - z)/d(x)|``, converged), and ``on_nonconvergence`` (``"raise"``: a
    caller collecting ``diagnostics`` such as :func:`jflows.models.checked_apply` raises
    :class:`~jflows.errors.InverseNotConvergedError`, otherwise a host callback does;
    ``"nan"``: NaNs; ``"ignore"``: only sown). The adjoint solve of gradients through the
    inverse follows the same policy.

    Attributes:
        hidden: channels of the two hidden layers, a multiple of the image's channels ``C``
            (``hidden // C`` groups of ``C``).
        kernel_size: odd kernel size of the three convolutions.
        upper: upper (True) or lower (False) triangular Jacobian.
        activation: ``"elu"`` (as MintNet) or ``"leaky_relu"`` (slope 0.1).
        last_init_scale: factor on the initial weights of ``W3`` (small: the layer starts near
            ``z = x``).
        inverse_damping: :math:`\alpha` in (0, 2) (the reference code uses 1/3.5).
        inverse_atol: absolute tolerance (default 1e-5 in float32, 1e-10 in float64).
        inverse_rtol: relative tolerance (same defaults).
        inverse_max_iter: iteration cap of the inverse and of its adjoint (None: 500).
        on_nonconvergence: ``"raise"``, ``"nan"`` or ``"ignore"``.
        param_dtype: parameter dtype (None: the input's float dtype).

    Example:
        >>> layer = MintLayer(hidden=4)
        >>> x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
        >>> variables = layer.init(jax.random.key(1), x)
        >>> z, logdet = layer.apply(variables, x)
        >>> x_back = layer.apply(variables, z, method="inverse")
        >>> logdet.shape, bool(jnp.max(jnp.abs(x_back - x)) < 1e-4)
        ((3,), True)
    """

    hidden: int
    kernel_size: int = 3
    upper: bool = False
    activation: str = "elu"
    last_init_scale: float = 0.01
    inverse_damping: float = 0.5
    inverse_atol: float | None = None
    inverse_rtol: float | None = None
    inverse_max_iter: int | None = None
    on_nonconvergence: str = "raise"
    param_dtype: Any = None

    own_collections = frozenset({DIAGNOSTICS})

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}; choose one of {list(ACTIVATIONS)}"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd int, got {self.kernel_size!r}")
        if not 0.0 < float(self.inverse_damping) < 2.0:
            raise ConfigError(
                f"inverse_damping must lie in (0, 2), got {self.inverse_damping!r}; e.g. 0.5"
            )
        check_solver_config(*self._tolerances(jnp.float32), self._max_iter(),
                            self.on_nonconvergence)
        super().__post_init__()

    def _tolerances(self, dtype) -> tuple[float, float]:
        default = 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-5
        atol = default if self.inverse_atol is None else self.inverse_atol
        rtol = default if self.inverse_rtol is None else self.inverse_rtol
        return atol, rtol

    def _max_iter(self) -> int:
        return DEFAULT_MAX_ITER if self.inverse_max_iter is None else self.inverse_max_iter

    @nn.compact
    def _weights(self, x: jax.Array) -> tuple[MintWeights, int]:
        if x.ndim < 3:
            raise ShapeError(f"MintLayer takes channels-last images (..., H, W, C), got {x.shape}")
        h, w, c = x.shape[-3:]
        if self.hidden < c or self.hidden % c:
            raise ConfigError(
                f"MintLayer hidden={self.hidden} must be a positive multiple of the image's "
                f"{c} channels; e.g. hidden={c * max(1, self.hidden // c)}"
            )
        dtype = param_dtype_for(self.param_dtype, x)
        k = self.kernel_size

        def kernel(scale=1.0):  # std scale / sqrt(k * k * in_channels)
            init = nn.initializers.variance_scaling(scale**2, "fan_in", "truncated_normal")
            return lambda key, shape: init(key, shape, dtype)

        zeros = lambda key, shape: jnp.zeros(shape, dtype)  # noqa: E731
        weights = MintWeights(
            w1=self.param("w1", kernel(), (k, k, c, self.hidden)),
            b1=self.param("b1", zeros, (self.hidden,)),
            w2=self.param("w2", kernel(), (k, k, self.hidden, self.hidden)),
            b2=self.param("b2", zeros, (self.hidden,)),
            w3=self.param("w3", kernel(self.last_init_scale),
                          (k, k, self.hidden, c)),
            b3=self.param("b3", zeros, (c,)),
            log_t=self.param("log_t", zeros, (h, w, c)),
        )
        return weights, c

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        weights, c = self._weights(x)
        z, diag = mint_forward(weights, x, c, upper=self.upper, activation=self.activation)
        return z, sum_event(jnp.log(diag), 3)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        weights, c = self._weights(z)
        x = self._solve(weights, z, c)
        _, diag = mint_forward(weights, x, c, upper=self.upper, activation=self.activation)
        return x, -sum_event(jnp.log(diag), 3)

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        weights, c = self._weights(z)
        return self._solve(weights, z, c)

    def _solve(self, weights: MintWeights, z: jax.Array, c: int) -> jax.Array:
        atol, rtol = self._tolerances(weights.w1.dtype)
        policy = self.on_nonconvergence
        # A caller collecting the diagnostics checks the flags itself (checked_apply).
        checked_by_caller = policy == "raise" and self.is_mutable_collection(DIAGNOSTICS)
        x, info = mint_inverse(
            weights, z, c, upper=self.upper, activation=self.activation,
            damping=self.inverse_damping, atol=atol, rtol=rtol, max_iter=self._max_iter(),
            on_nonconvergence="ignore" if checked_by_caller else policy,
            adjoint_on_nonconvergence=policy, name=self.name or "MintLayer",
        )
        self.sow(DIAGNOSTICS, "inverse", info)
        return x
