r"""MADE: a masked autoregressive network (Germain et al., 2015) as a conditioner.

``MADE()(x, num_params, context)`` maps ``(..., D)`` inputs to ``(..., D, num_params)``
outputs such that the outputs at position ``d`` depend only on the inputs that come before
``d`` in the network's order (the degrees and masks of :mod:`jflows.kernels.made`). The
context, if any, enters every unit of the first hidden layer through an unmasked dense map
(straight into the outputs when there is no hidden layer), so it never breaks the
autoregressive property; a conditional MADE also has hidden units of degree 0, which see the
context only and reach every output. The last layer starts at zero, so a layer built on a MADE
starts as its identity transform.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflows.bijectors.base import param_dtype_for
from jflows.bijectors.conditioners import ACTIVATIONS, check_activation, torch_uniform
from jflows.errors import ConfigError
from jflows.kernels.made import HIDDEN_DEGREES, hidden_degrees, input_degrees, made_masks


class MaskedDense(nn.Module):
    """``y = x (W * M) + b`` with a fixed 0/1 mask ``M`` of shape ``(fan_in, fan_out)``.

    Attributes:
        mask: the numpy mask; its shape fixes the layer's sizes.
        zero_init: start ``W`` and ``b`` at zero.
        param_dtype: dtype of the weights.
    """

    mask: Any
    zero_init: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in, fan_out = np.shape(self.mask)
        if self.zero_init:
            k_init = b_init = nn.initializers.zeros
        else:
            # the fan-in a unit really sees (at least 1), PyTorch's default uniform range
            k_init = b_init = torch_uniform(int(max(np.sum(self.mask, axis=0).mean(), 1)))
        kernel = self.param("kernel", k_init, (fan_in, fan_out), self.param_dtype)
        bias = self.param("bias", b_init, (fan_out,), self.param_dtype)
        return x @ (kernel * jnp.asarray(self.mask, kernel.dtype)) + bias


class MADE(nn.Module):
    """Masked autoregressive MLP ``D -> hidden... -> D x num_params``.

    Attributes:
        hidden: widths of the hidden layers (each at least ``D - 1`` wide, so that every
            degree is present, is usual but not required).
        order: ``"natural"`` (input ``i`` comes ``i``-th), ``"reverse"`` or a permutation of
            ``range(D)`` listing the inputs in autoregressive order.
        degrees: hidden degrees ``"cycle"`` (deterministic) or ``"random"`` (drawn from
            ``seed``; see :func:`jflows.kernels.made.hidden_degrees`).
        seed: seed of the random hidden degrees.
        activation: one of ``relu``, ``elu``, ``tanh``, ``gelu``.
        zero_init_last: start the output layer at zero.
        param_dtype: dtype of the weights (None: the input's float dtype).

    Example:
        >>> made = MADE(hidden=(16, 16))
        >>> x = jnp.ones((5, 3))
        >>> variables = made.init(jax.random.key(0), x, 2)
        >>> out = made.apply(variables, x, 2)
        >>> out.shape, float(jnp.abs(out).max())  # zero-initialised last layer
        ((5, 3, 2), 0.0)
    """

    hidden: Sequence[int] = (64, 64)
    order: Any = "natural"
    degrees: str = "cycle"
    seed: int = 0
    activation: str = "relu"
    zero_init_last: bool = True
    param_dtype: Any = None

    def __post_init__(self):
        check_activation(self.activation, "MADE")
        widths = tuple(self.hidden)
        if any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1
               for w in widths):
            raise ConfigError(f"MADE needs hidden widths of positive integers, got {widths!r}")
        if self.degrees not in HIDDEN_DEGREES:
            raise ConfigError(
                f"MADE got degrees={self.degrees!r}; choose one of {HIDDEN_DEGREES}"
            )
        super().__post_init__()

    def masks(self, dim: int, num_params: int, conditional: bool = False) -> list[np.ndarray]:
        """The masks of every layer for ``dim`` inputs and ``num_params`` outputs per input.

        A ``conditional`` network has hidden units of degree 0 too, which see only the
        context, so that the first output is a nonlinear function of the context as well.
        """
        degrees_in = input_degrees(dim, self.order)
        hidden = hidden_degrees(dim, tuple(self.hidden), self.degrees, self.seed,
                                min_degree=0 if conditional else 1)
        return made_masks(degrees_in, hidden, num_params)

    @nn.compact
    def __call__(
        self, x: jax.Array, num_params: int, context: jax.Array | None = None
    ) -> jax.Array:
        """Outputs ``(..., D, num_params)``; ``context`` ``(..., K)`` shares ``x``'s batch axes."""
        pdt = param_dtype_for(self.param_dtype, x)
        act = ACTIVATIONS[self.activation]
        dim = x.shape[-1]
        masks = self.masks(dim, num_params, conditional=context is not None)
        h = x
        for i, mask in enumerate(masks):
            last = i == len(masks) - 1
            y = MaskedDense(mask, zero_init=last and self.zero_init_last, param_dtype=pdt,
                            name=f"masked_{i}")(h)
            if i == 0 and context is not None:  # unmasked: the context precedes every input
                init = (nn.initializers.zeros if last and self.zero_init_last
                        else torch_uniform(context.shape[-1]))
                y = y + nn.Dense(mask.shape[1], use_bias=False, kernel_init=init,
                                 param_dtype=pdt, name="context")(context.astype(h.dtype))
            h = y if last else act(y)
        return h.reshape((*h.shape[:-1], dim, num_params))
