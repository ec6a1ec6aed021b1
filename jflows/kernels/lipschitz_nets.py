r"""Residual branches ``g`` of i-ResNet and Residual Flows as pure functions of their weights.

A branch is a stack of linear maps (dense or "SAME" stride-1 convolutions) with 1-Lipschitz
activations between them; with pre-activation (Residual Flows' default) the input is activated
first:

.. math::
    g(x) = W_L \phi(\dots \phi(W_2\, \phi(W_1 \phi(x) + b_1) + b_2) \dots) + b_L.

If every ``W_i`` has norm at most ``c`` then :math:`\operatorname{Lip}(g) \le c^L < 1`.
``weights`` are the already normalised matrices; the modules in
:mod:`jflows.bijectors.lipschitz` produce them.

LipSwish (Chen et al., 2019) is :math:`\phi(z) = z\,\sigma(\beta z)/1.1` with
:math:`\beta = \mathrm{softplus}(b)`; the derivative of :math:`z\sigma(\beta z)` lies in
:math:`[-0.0998, 1.0998]` for every :math:`\beta > 0`, so dividing by 1.1 makes it 1-Lipschitz,
and unlike ELU its second derivative does not vanish where :math:`|\phi'|` is close to 1.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jflows.errors import ConfigError

LIPSCHITZ_ACTIVATIONS = ("lipswish", "elu", "softplus", "tanh", "relu", "identity")
LIPSWISH_INIT = 0.5


def check_activation(name: str) -> None:
    """Raises ConfigError unless ``name`` is a 1-Lipschitz activation jflows knows."""
    if name not in LIPSCHITZ_ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {name!r} for a Lipschitz branch; choose one of "
            f"{LIPSCHITZ_ACTIVATIONS}"
        )


def lipswish(x: jax.Array, beta_raw: jax.Array) -> jax.Array:
    """``x sigmoid(softplus(beta_raw) x) / 1.1`` (1-Lipschitz).

    Example:
        >>> round(float(lipswish(jnp.asarray(1.0), jnp.asarray(0.5))), 4)  # softplus(0.5) = 0.974
        0.6599
    """
    return _lipswish(x, jax.nn.softplus(beta_raw))


@jax.custom_jvp
def _lipswish(x: jax.Array, beta: jax.Array) -> jax.Array:
    r"""``x sigmoid(beta x) / 1.1`` with a hand-written JVP.

    With :math:`s = \sigma(\beta x)` and :math:`s' = s(1 - s)`,

    .. math::
        \partial_x \phi = (s + \beta x s') / 1.1, \qquad \partial_\beta \phi = x^2 s' / 1.1.

    Autodiff of the plain expression gives the same numbers, but linearising it keeps several
    residual arrays that every vector-Jacobian product of the log-det power series combines
    again; here a linearisation keeps the single array :math:`\partial_x \phi`, and a zero
    ``beta`` tangent (the series differentiates in ``x`` only) costs nothing.
    """
    return x * jax.nn.sigmoid(beta * x) / 1.1


@functools.partial(_lipswish.defjvp, symbolic_zeros=True)
def _lipswish_jvp(primals, tangents):
    x, beta = primals
    dx, dbeta = tangents
    s = jax.nn.sigmoid(beta * x)
    ds = s * (1.0 - s)
    y = x * s / 1.1
    zero = jax.custom_derivatives.SymbolicZero
    tangent = jnp.zeros_like(y)
    if not isinstance(dx, zero):
        tangent = ((s + beta * x * ds) / 1.1) * dx
    if not isinstance(dbeta, zero):
        tangent = tangent + (x * x * ds / 1.1) * dbeta
    return y, tangent


def activate(name: str, x: jax.Array, beta_raw: jax.Array | None = None) -> jax.Array:
    """Applies activation ``name`` (``beta_raw`` is LipSwish's learnable parameter)."""
    if name == "lipswish":
        return lipswish(x, beta_raw)
    if name == "elu":
        return jax.nn.elu(x)
    if name == "softplus":
        return jax.nn.softplus(x)
    if name == "tanh":
        return jnp.tanh(x)
    if name == "relu":
        return jax.nn.relu(x)
    return x


def residual_mlp(
    layers: Sequence[tuple[jax.Array, jax.Array]],
    betas: Sequence[jax.Array],
    x: jax.Array,
    activation: str,
    preact: bool = True,
) -> jax.Array:
    """Dense branch: ``layers`` are ``(kernel (in, out), bias)`` pairs, ``y = x @ kernel + b``.

    ``betas`` holds one LipSwish parameter per activation (in order; ignored by other
    activations): ``len(layers)`` of them with ``preact``, one fewer without.
    """
    return _branch(layers, betas, x, activation, preact, lambda h, w: h @ w)


def _conv(h: jax.Array, kernel: jax.Array) -> jax.Array:
    """``h`` convolved with the HWIO ``kernel``, computed from the kernel transposed to HWOI.

    The log-det series runs the branch's vector-Jacobian products in a ``while`` loop; the
    transpose of a convolution reads its kernel with ``in`` and ``out`` swapped, and XLA:CPU
    only runs a convolution as a fast fused kernel when the kernel it reads is laid out HWIO,
    which it does not arrange inside a loop (about 3x slower per convolution). Convolving with
    the HWOI transpose makes the loop's transposes read HWIO; the forward and gradient
    convolutions outside the loop are fast either way (W4 step: ``benchmarks/README.md``).
    """
    lead = h.shape[:-3]
    flat = h.reshape((-1, *h.shape[-3:]))
    out = lax.conv_general_dilated(
        flat, kernel.transpose(0, 1, 3, 2), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWOI", "NHWC"),
    )
    return out.reshape((*lead, *out.shape[1:]))


def residual_cnn(
    layers: Sequence[tuple[jax.Array, jax.Array]],
    betas: Sequence[jax.Array],
    x: jax.Array,
    activation: str,
    preact: bool = True,
) -> jax.Array:
    """Convolutional branch on channels-last images (any leading batch axes).

    ``layers`` are ``(kernel HWIO, bias)`` pairs; stride 1 and "SAME" zero padding.
    """
    return _branch(layers, betas, x, activation, preact, _conv)


def _branch(layers, betas, x, activation, preact, linear):
    check_activation(activation)
    n_act = len(layers) if preact else len(layers) - 1
    if len(betas) != n_act:
        raise ConfigError(f"expected {n_act} activation parameters, got {len(betas)}")
    h, a = x, 0
    for i, (kernel, bias) in enumerate(layers):
        if preact or i > 0:
            h = activate(activation, h, betas[a])
            a += 1
        h = linear(h, kernel) + bias
    return h
