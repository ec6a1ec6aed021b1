"""Gradients through ``lax.scan`` over stacked layers on this machine: conv vs dense, unrolled.

    python benchmarks/scan_unroll.py

jflows stacks identical blocks with ``nn.scan`` (one traced block, parameters stacked on a
leading axis). On XLA's CPU backend the gradient of a convolution kernel computed inside the
compiled loop is far slower than the same gradient outside a loop; unrolling the loop
(``unroll=True``, still one traced block and stacked parameters) removes the penalty. Dense
layers lose much less. This script measures both, in plain JAX, so the choice of the factories'
``unroll`` defaults can be rechecked on any machine.
"""

from __future__ import annotations

import functools
import platform
import time

import jax
import jax.numpy as jnp
from jax import lax

DN = ("NHWC", "HWIO", "NHWC")


def bench(fn, *args, n=30):
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(n):
        out = fn(*args)
    jax.block_until_ready(out)
    return 1000 * (time.perf_counter() - start) / n


def conv_layer(x, p):
    k1, k2 = p
    conv = lambda h, k: lax.conv_general_dilated(h, k, (1, 1), "SAME", dimension_numbers=DN)  # noqa: E731
    return x + 0.1 * conv(jax.nn.relu(conv(x, k1)), k2)


def dense_layer(x, p):
    a, b, c = p
    return x + jnp.tanh(jnp.tanh(x @ a) @ b) @ c


def losses(layer, n_layers):
    def unrolled(p, x):
        for i in range(n_layers):
            x = layer(x, jax.tree.map(lambda a, i=i: a[i], p))
        return jnp.sum(x**2)

    def scanned(p, x, unroll=1):
        y, _ = lax.scan(lambda c, pp: (layer(c, pp), None), x, p, unroll=unroll)
        return jnp.sum(y**2)

    return unrolled, scanned


def main() -> None:
    print(f"{platform.machine()}, jax {jax.__version__}, devices {jax.devices()}")
    keys = jax.random.split(jax.random.key(0), 6)
    conv_p = (
        0.1 * jax.random.normal(keys[0], (4, 3, 3, 4, 64)),
        0.1 * jax.random.normal(keys[1], (4, 3, 3, 64, 4)),
    )
    conv_x = jax.random.normal(keys[2], (64, 4, 4, 4))
    dense_p = (
        0.1 * jax.random.normal(keys[3], (10, 2, 128)),
        0.05 * jax.random.normal(keys[4], (10, 128, 128)),
        0.01 * jax.random.normal(keys[5], (10, 128, 2)),
    )
    dense_x = jax.random.normal(keys[0], (500, 2))
    print(f"{'layers':36s} {'python loop':>12s} {'scan':>8s} {'scan unroll':>12s}  (ms per grad)")
    for name, layer, n, p, x in (
        ("4 conv layers 3x3, 64 ch, 64x4x4x4", conv_layer, 4, conv_p, conv_x),
        ("10 dense layers 2-128-128-2, b=500", dense_layer, 10, dense_p, dense_x),
    ):
        unrolled, scanned = losses(layer, n)
        t_loop = bench(jax.jit(jax.grad(unrolled)), p, x)
        t_scan = bench(jax.jit(jax.grad(scanned)), p, x)
        t_unroll = bench(jax.jit(jax.grad(functools.partial(scanned, unroll=True))), p, x)
        print(f"{name:36s} {t_loop:12.2f} {t_scan:8.2f} {t_unroll:12.2f}")


if __name__ == "__main__":
    main()
