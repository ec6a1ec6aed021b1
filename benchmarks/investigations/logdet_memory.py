"""Peak memory of log-det gradients: Neumann vs backprop, number of terms, remat of the surrogate.

Compiles ``jax.grad`` of a weighted sum of per-example log-dets of a small convolutional residual
branch and reads XLA's static memory analysis (no run needed). Run with::

    python benchmarks/logdet_memory.py [--batch 16] [--size 16] [--channels 8] [--hidden 64]

``temp`` is XLA's scratch buffer size, the part that grows with stored activations; ``total``
adds arguments and outputs. Goals: Neumann gradients with 16 exact terms need at most 1.15x the
memory of 2 terms. For one block, the default form of the Neumann gradient (one custom VJP
that recomputes the surrogate in the backward pass, ``remat_surrogate=True``) needs about as
much as the plain form (within a few per cent: it keeps ``x``, the probe, the Neumann vector and
the weights for the backward pass); its saving shows inside ``nn.scan``, where the plain form
stacks every block's surrogate activations (the W1 step: 5.5 vs 53 MiB of XLA scratch memory).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from jflows.kernels import logdet_estimate

DN = ("NHWC", "HWIO", "NHWC")


def lipswish(z):
    return z * jax.nn.sigmoid(z) / 1.1


def conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DN)


def make_params(key, channels, hidden):
    shapes = [(3, 3, channels, hidden), (1, 1, hidden, hidden), (3, 3, hidden, channels)]
    keys = jax.random.split(key, len(shapes))
    kernels = []
    for k, shape in zip(keys, shapes):
        fan_in = shape[0] * shape[1] * shape[2]
        kernels.append(0.5 * jax.random.normal(k, shape) / jnp.sqrt(fan_in))
    return kernels


def residual_branch(params):
    k1, k2, k3 = params
    return lambda x: conv(lipswish(conv(lipswish(conv(x, k1)), k2)), k3)


def memory_of(params, x, weights, key, **kw):
    def loss(p, x):
        _, logdet = logdet_estimate(residual_branch(p), x, key, 3, **kw)
        return weights @ logdet

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    mem = compiled.memory_analysis()
    total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    return mem.temp_size_in_bytes, total


def path_only_memory(params, x, weights):
    """The same gradient without any log-det: what the path through g(x) alone costs."""

    def loss(p, x):
        return weights @ jnp.sum(residual_branch(p)(x), axis=(1, 2, 3))

    mem = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile().memory_analysis()
    total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    return mem.temp_size_in_bytes, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()

    params = make_params(jax.random.key(0), args.channels, args.hidden)
    x = jax.random.normal(jax.random.key(1), (args.batch, args.size, args.size, args.channels))
    weights = jnp.linspace(0.5, 1.5, args.batch)  # any per-example weighting is handled
    key = jax.random.key(2)

    rows = [
        ("backprop", None, 2, False),
        ("backprop", None, 16, False),
        ("neumann", None, 2, False),
        ("neumann", None, 16, False),
        ("neumann", None, 2, True),
        ("neumann", None, 16, True),
        ("neumann", "poisson", 2, False),
        ("neumann", "poisson", 2, True),
    ]
    results = {}
    print(f"device: {jax.devices()[0].device_kind}; x: {tuple(x.shape)}, hidden {args.hidden}")
    print(f"{'gradient':<9} {'tail':<8} {'terms':>5} {'remat':>5} {'temp MiB':>9} {'total MiB':>9}")
    temp, total = path_only_memory(params, x, weights)
    print(f"{'path g(x) only':<29} {temp / 2**20:>9.2f} {total / 2**20:>9.2f}")
    for gradient, tail, terms, remat in rows:
        kw = {"n_exact_terms": terms, "tail": tail, "gradient": gradient, "remat_surrogate": remat}
        temp, total = memory_of(params, x, weights, key, **kw)
        results[(gradient, tail, terms, remat)] = total
        print(
            f"{gradient:<9} {tail or '-':<8} {terms:>5} {str(remat):>5} "
            f"{temp / 2**20:>9.2f} {total / 2**20:>9.2f}"
        )

    def ratio(a, b):
        return results[a] / results[b]

    print()
    print(
        "neumann 16/2 terms (goal <= 1.15): "
        f"{ratio(('neumann', None, 16, False), ('neumann', None, 2, False)):.3f}"
    )
    print(
        "neumann 16/2 terms, remat:         "
        f"{ratio(('neumann', None, 16, True), ('neumann', None, 2, True)):.3f}"
    )
    print(
        "backprop 16/2 terms:               "
        f"{ratio(('backprop', None, 16, False), ('backprop', None, 2, False)):.3f}"
    )
    print(
        "remat / no remat (2 terms):        "
        f"{ratio(('neumann', None, 2, True), ('neumann', None, 2, False)):.3f}"
    )


if __name__ == "__main__":
    main()
