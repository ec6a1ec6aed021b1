"""Convolutions on images no larger than the kernel window run as one dense matrix product."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jflows.bijectors as jb
from jflows.kernels.small_conv import conv_general_dilated, same_conv_matrix

NHWC = ("NHWC", "HWIO", "NHWC")


def reference(x, k):
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)


@pytest.mark.float64
@pytest.mark.parametrize(("hw", "kernel"), [((2, 2), (3, 3)), ((1, 1), (3, 3)), ((2, 3), (3, 3)),
                                            ((2, 2), (2, 2)), ((3, 1), (1, 3)), ((4, 4), (3, 3)),
                                            ((4, 2), (3, 3))])
def test_equals_the_convolution(hw, kernel):
    key_x, key_k = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (5, *hw, 3))
    k = jax.random.normal(key_k, (*kernel, 3, 4))
    tol = 1e-12 if x.dtype == jnp.float64 else 1e-5
    np.testing.assert_allclose(
        conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC), reference(x, k),
        rtol=tol, atol=tol,
    )
    if hw[0] * hw[1] <= kernel[0] * kernel[1]:
        m = same_conv_matrix(k, *hw)
        np.testing.assert_allclose((x.reshape(5, -1) @ m).reshape(5, *hw, 4), reference(x, k),
                                   rtol=tol, atol=tol)


def _ops(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


def test_conv_net_on_the_top_level_of_a_multiscale_flow_runs_no_convolution():
    """Glow's 2x2 top level: its 3x3 convolutions become matrix products (the 1x1 stays)."""
    net = jb.ConvNet(hidden=16)
    x = jnp.ones((3, 2, 2, 8))
    variables = net.init(jax.random.key(0), x, 8)
    hlo = _ops(lambda v, x: net.apply(v, x, 8), variables, x)
    assert hlo.count("stablehlo.convolution") == 1
    assert sorted(variables["params"]) == ["Conv_0", "Conv_1", "Conv_2"]  # names unchanged


@pytest.mark.parametrize(("hw", "channels", "out", "convolutions"), [
    ((4, 4), 16, 16, 3),  # 16 pixels > 9 taps, many channels: convolutions
    ((4, 4), 2, 4, 1),  # Glow's 4x4 level: 2 -> hidden and hidden -> 4 channels go dense
    ((8, 8), 2, 4, 3),  # 64 pixels > 2 x 9 taps: convolutions
])
def test_few_channels_on_images_up_to_twice_the_window_go_dense(hw, channels, out, convolutions):
    net = jb.ConvNet(hidden=16)
    x = jnp.ones((3, *hw, channels))
    variables = net.init(jax.random.key(0), x, out)
    hlo = _ops(lambda v, x: net.apply(v, x, out), variables, x)
    assert hlo.count("stablehlo.convolution") == convolutions
