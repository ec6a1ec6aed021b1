"""Conditioner networks for coupling layers: an MLP for vectors, a small CNN for images.

A conditioner maps the kept part of the input to ``out_features`` numbers per position:
``(..., d) -> (..., out_features)`` for the MLP and ``(..., H, W, C) -> (..., H, W,
out_features)`` for the CNN. Its last layer starts at zero, so every coupling layer starts as
the identity map.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import param_dtype_for
from jflows.errors import ConfigError
from jflows.kernels.small_conv import conv_general_dilated

ACTIVATIONS = {"relu": nn.relu, "elu": nn.elu, "tanh": jnp.tanh, "gelu": nn.gelu}


def torch_uniform(fan_in: int):
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: PyTorch's default for both weights and biases.

    Unlike Flax's LeCun-normal kernels with zero biases, the ReLU kinks of the first layer are
    spread out at initialisation, which noticeably helps flows on low-dimensional data.
    """
    bound = 1.0 / jnp.sqrt(jnp.maximum(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def check_activation(name: str, where: str) -> None:
    """Raises ConfigError unless ``name`` is a key of :data:`ACTIVATIONS`.

    Example:
        >>> check_activation("swish", "MLP")
        Traceback (most recent call last):
        ...
        jflows.errors.ConfigError: MLP got activation='swish'; choose one of 'relu', 'elu', \
'tanh', 'gelu'
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ConfigError(
            f"{where} got activation={name!r}; choose one of "
            f"{', '.join(map(repr, ACTIVATIONS))}"
        )


def _check_widths(widths, what: str, where: str) -> None:
    if any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1 for w in widths):
        raise ConfigError(f"{where} needs {what} of positive integers, got {widths!r}")


class MLP(nn.Module):
    """Fully connected conditioner ``d -> hidden... -> out_features``.

    Attributes:
        hidden: widths of the hidden layers.
        activation: one of ``relu``, ``elu``, ``tanh``, ``gelu``.
        zero_init_last: start the output layer at zero (identity coupling at init).
        param_dtype: dtype of the weights (None: the input's float dtype).
    """

    hidden: Sequence[int] = (128, 128)
    activation: str = "relu"
    zero_init_last: bool = True
    param_dtype: Any = None

    def __post_init__(self):
        check_activation(self.activation, "MLP")
        _check_widths(tuple(self.hidden), "hidden widths", "MLP")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, out_features: int) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        pdt = param_dtype_for(self.param_dtype, x)
        for width in self.hidden:
            init = torch_uniform(x.shape[-1])
            x = act(nn.Dense(width, kernel_init=init, bias_init=init, param_dtype=pdt)(x))
        last_init = nn.initializers.zeros if self.zero_init_last else torch_uniform(x.shape[-1])
        return nn.Dense(out_features, kernel_init=last_init, bias_init=nn.initializers.zeros,
                        param_dtype=pdt)(x)


class ConvNet(nn.Module):
    """Convolutional conditioner: conv ``k_1`` -> act -> ... -> conv ``k_L`` (zero-initialised).

    With the default ``kernel_sizes=(3, 1, 3)`` this is the Glow / Residual Flows block shape:
    3x3 conv to ``hidden`` channels, 1x1 conv, 3x3 conv to ``out_features``. "SAME" padding.
    On images no larger than a kernel's window (the 2x2 top level of Glow on 8x8 digits) a
    convolution runs as one dense matrix product
    (:func:`jflows.kernels.small_conv.conv_general_dilated`; same parameters and results).

    Attributes:
        hidden: channels of the hidden layers.
        kernel_sizes: one spatial kernel size per convolution.
        activation: one of ``relu``, ``elu``, ``tanh``, ``gelu``.
        zero_init_last: start the output convolution at zero.
        param_dtype: dtype of the weights (None: the input's float dtype).
    """

    hidden: int = 64
    kernel_sizes: Sequence[int] = (3, 1, 3)
    activation: str = "relu"
    zero_init_last: bool = True
    param_dtype: Any = None

    def __post_init__(self):
        check_activation(self.activation, "ConvNet")
        _check_widths((self.hidden,), "hidden channels", "ConvNet")
        _check_widths(tuple(self.kernel_sizes), "kernel_sizes", "ConvNet")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, out_features: int) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        pdt = param_dtype_for(self.param_dtype, x)
        lead = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:]))
        n = len(self.kernel_sizes)
        for i, k in enumerate(self.kernel_sizes):
            last = i == n - 1
            feats = out_features if last else self.hidden
            fan_in = x.shape[-1] * k * k
            if last and self.zero_init_last:
                k_init, b_init = nn.initializers.zeros, nn.initializers.zeros
            else:
                k_init = b_init = torch_uniform(fan_in)
            x = nn.Conv(feats, (k, k), padding="SAME", kernel_init=k_init, bias_init=b_init,
                        param_dtype=pdt, conv_general_dilated=conv_general_dilated)(x)
            if not last:
                x = act(x)
        return x.reshape((*lead, *x.shape[1:]))
