"""The convolutional residual branch's input-VJP convolutions read an HWIO-laid-out kernel.

The log-det series repeats vector-Jacobian products of the branch inside a ``while`` loop.
XLA:CPU runs a convolution fast (a fused XNNPACK kernel) when its kernel is laid out
``(H, W, in, out)``; the transposed convolution of a VJP reads the forward kernel with ``in``
and ``out`` swapped, which inside a loop falls back to a generic convolution about 3x slower
(benchmark W4: 60 % of a training step). ``residual_cnn`` therefore convolves with the kernel
stored transposed (HWOI), so the transposes that the series loop runs read HWIO.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jflows.kernels.lipschitz_nets import residual_cnn

HWIO_RHS_SPEC = (3, 2, 0, 1)  # lax's rhs_spec: (out feature, in feature, spatial...)


def _layers():
    keys = jax.random.split(jax.random.key(0), 3)
    shapes = [(3, 3, 2, 5), (1, 1, 5, 5), (3, 3, 5, 2)]
    return [(0.2 * jax.random.normal(k, s), jnp.zeros(s[-1])) for k, s in zip(keys, shapes)]


def _reference(layers, x):
    h = x
    for kernel, bias in layers:
        h = jnp.tanh(h)
        h = lax.conv_general_dilated(
            h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ) + bias
    return h


def test_series_vjp_convolutions_read_hwio_kernels_and_values_match():
    layers = _layers()
    x = jax.random.normal(jax.random.key(1), (3, 4, 4, 2))
    g = lambda y: residual_cnn(layers, [None] * 3, y, activation="tanh")  # noqa: E731
    np.testing.assert_allclose(g(x), _reference(layers, x), rtol=1e-5, atol=1e-6)
    _, vjp = jax.vjp(g, x)
    _, vjp_ref = jax.vjp(lambda y: _reference(layers, y), x)
    ct = jax.random.normal(jax.random.key(2), x.shape)
    np.testing.assert_allclose(vjp(ct)[0], vjp_ref(ct)[0], rtol=1e-5, atol=1e-6)
    jaxpr = jax.make_jaxpr(lambda c: vjp(c))(ct)
    specs = [
        tuple(e.params["dimension_numbers"].rhs_spec)
        for e in jaxpr.jaxpr.eqns
        if e.primitive.name == "conv_general_dilated"
    ]
    assert len(specs) == 3
    assert all(spec == HWIO_RHS_SPEC for spec in specs), specs

