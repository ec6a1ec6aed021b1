"""Lipschitz-constrained residual branches ``g`` (dense and convolutional).

Each module's ``__call__(x)`` creates (at ``init``) or reads its parameters, refreshes its
power-iteration vectors when the ``lipschitz`` collection is mutable, and returns the branch as
a pure function ``g(x)`` of its input with the normalised weights closed over (maths in
:mod:`jflows.kernels.lipschitz_nets`). The residual block then differentiates, linearises and
inverts that plain function without calling back into Flax.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

from jflows.bijectors.base import param_dtype_for
from jflows.bijectors.lipschitz import lipswish_betas, normalized_weight, torch_linear_init
from jflows.errors import ConfigError, ShapeError
from jflows.kernels.lipschitz_nets import (
    LIPSWISH_INIT,
    check_activation,
    residual_cnn,
    residual_mlp,
)
from jflows.kernels.spectral import check_coeff, dense_operator
from jflows.kernels.spectral_conv import conv_operator


class _BranchChecks:
    """Checks and helpers shared by the dense and convolutional branches (no fields)."""

    def __post_init__(self):
        check_coeff(self.coeff)
        check_activation(self.activation)
        if self.power_iterations < 0:
            raise ConfigError(f"power_iterations must be >= 0, got {self.power_iterations}")
        super().__post_init__()

    def _betas(self, n_layers: int, dtype, compute_dtype):
        n_act = n_layers if self.preact else n_layers - 1
        if self.activation != "lipswish":
            return [None] * n_act
        return [b.astype(compute_dtype) for b in lipswish_betas(self, n_act, LIPSWISH_INIT, dtype)]


class LipschitzMLP(_BranchChecks, nn.Module):
    """Dense branch ``d -> hidden... -> d`` with every weight normalised to norm <= ``coeff``.

    ``Lip(g) <= coeff ** (len(hidden) + 1)``. Weights and biases start PyTorch-style
    (``U(+-1/sqrt(fan_in))``); the last layer's weights are multiplied by ``last_init_scale``
    (1e-3 in the Residual Flows toy code, so each block starts near the identity).

    ``kernel_i`` is stored as ``(in, out)``, except for narrowing layers (``out < in``, e.g.
    the last layer of a 2-D flow), which are stored as ``(out, in)``: their weight gradient is
    a contraction over the batch into a tall, thin matrix, which XLA:CPU computes about 5x
    faster into the wide layout (``python -m benchmarks.investigations.w1_breakdown`` prints both).
    Both are
    used as ``y = x @ W`` with ``W`` of shape ``(in, out)``.

    Attributes:
        hidden: hidden widths (Residual Flows toy: 128-128-128-128; W1: 128-128).
        coeff: Lipschitz coefficient per layer, in (0, 1).
        activation: ``"lipswish"`` (learnable beta per activation), ``"elu"``, ...
        preact: activate the input first (Residual Flows); otherwise only between layers.
        power_iterations: power iterations per refresh (when the collection is mutable).
        power_tol: if set, refresh adaptively to this tolerance instead.
        last_init_scale: factor on the last layer's initial weights.
        norm_orders: optional induced norm orders ``p_0, ..., p_L`` (layer ``i`` normalised in
            ``||.||_{p_i -> p_{i+1}}``, ``p_0 = p_L``); default all 2 (spectral).
        param_dtype: dtype of the weights, biases and LipSwish parameters (None: the dtype of
            the data at ``init``); the power-iteration vectors follow the data's dtype.
    """

    hidden: Sequence[int] = (128, 128)
    coeff: float = 0.97
    activation: str = "lipswish"
    preact: bool = True
    power_iterations: int = 5
    power_tol: float | None = None
    last_init_scale: float = 1.0
    norm_orders: Sequence[float] | None = None
    param_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> Callable[[jax.Array], jax.Array]:
        d = x.shape[-1]
        pdt = param_dtype_for(self.param_dtype, x)
        dims = [d, *self.hidden, d]
        n = len(dims) - 1
        orders = (2.0,) * (n + 1)
        if self.norm_orders:
            orders = tuple(float(p) for p in self.norm_orders)
        if len(orders) != n + 1 or orders[0] != orders[-1]:
            raise ConfigError(
                f"norm_orders needs {n + 1} entries with first == last, got {self.norm_orders}"
            )
        layers = []
        for i in range(n):
            scale = self.last_init_scale if i == n - 1 else 1.0
            narrowing = dims[i + 1] < dims[i]
            shape = (dims[i + 1], dims[i]) if narrowing else (dims[i], dims[i + 1])
            kernel = self.param(f"kernel_{i}", torch_linear_init(dims[i], scale), shape, pdt)
            kernel = kernel.T if narrowing else kernel  # used as (in, out) from here on
            bias = self.param(f"bias_{i}", torch_linear_init(dims[i]), (dims[i + 1],), pdt)
            w = normalized_weight(
                self, f"layer_{i}", kernel.astype(x.dtype), dense_operator, (dims[i],),
                (dims[i + 1],), self.coeff, self.power_iterations, self.power_tol,
                (orders[i], orders[i + 1]),
            )
            layers.append((w.astype(x.dtype), bias.astype(x.dtype)))
        betas = self._betas(n, pdt, x.dtype)
        return functools.partial(residual_mlp, layers, betas, activation=self.activation,
                                 preact=self.preact)


class LipschitzCNN(_BranchChecks, nn.Module):
    """Convolutional branch ``C -> hidden -> ... -> C`` ("SAME", stride 1), Residual Flows' 3-1-3.

    Every convolution is normalised by the spectral norm of the convolution **operator** at the
    input's spatial size (recorded at ``init``; 1x1 convolutions use the ``C_out x C_in``
    matrix, whose norm is the operator's at any size).

    Attributes:
        hidden: channels of the hidden layers (Residual Flows: 512; CPU-sized default 32).
        kernel_sizes: one odd spatial size per convolution.
        coeff, activation, preact, power_iterations, power_tol, last_init_scale, param_dtype:
            as in :class:`LipschitzMLP`.
    """

    hidden: int = 32
    kernel_sizes: Sequence[int] = (3, 1, 3)
    coeff: float = 0.97
    activation: str = "lipswish"
    preact: bool = True
    power_iterations: int = 5
    power_tol: float | None = None
    last_init_scale: float = 1.0
    param_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> Callable[[jax.Array], jax.Array]:
        h, w, c = x.shape[-3:]
        pdt = param_dtype_for(self.param_dtype, x)
        n = len(self.kernel_sizes)
        chans = [c, *([self.hidden] * (n - 1)), c]
        layers = []
        for i, k in enumerate(self.kernel_sizes):
            if k % 2 != 1:
                raise ConfigError(f"kernel sizes must be odd for SAME padding, got {k}")
            fan_in = chans[i] * k * k
            scale = self.last_init_scale if i == n - 1 else 1.0
            kernel = self.param(f"kernel_{i}", torch_linear_init(fan_in, scale),
                                (k, k, chans[i], chans[i + 1]), pdt)
            bias = self.param(f"bias_{i}", torch_linear_init(fan_in), (chans[i + 1],), pdt)
            if k == 1:
                op = lambda kern: dense_operator(kern[0, 0])  # noqa: E731
                in_shape, out_shape = (chans[i],), (chans[i + 1],)
            else:
                op = functools.partial(conv_operator, input_shape=(h, w, chans[i]))
                in_shape, out_shape = (h, w, chans[i]), (h, w, chans[i + 1])
            wn = normalized_weight(
                self, f"layer_{i}", kernel.astype(x.dtype), op, in_shape, out_shape,
                self.coeff, self.power_iterations, self.power_tol,
            )
            if k > 1:
                self._check_spatial(f"layer_{i}", (h, w, chans[i]))
            layers.append((wn.astype(x.dtype), bias.astype(x.dtype)))
        betas = self._betas(n, pdt, x.dtype)
        return functools.partial(residual_cnn, layers, betas, activation=self.activation,
                                 preact=self.preact)

    def _check_spatial(self, name: str, shape: tuple[int, int, int]) -> None:
        stored = self.get_variable("lipschitz", name)["v"].shape
        if tuple(stored) != tuple(shape):
            raise ShapeError(
                f"{self.name or type(self).__name__}: its convolutions were normalised for "
                f"inputs of spatial shape {tuple(stored[:2])}, got {tuple(shape[:2])}; the "
                "spectral norm of a convolution depends on the input size, so build and "
                "initialise the model for this size"
            )
