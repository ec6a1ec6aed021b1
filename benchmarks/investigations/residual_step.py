"""Residual Flow training steps: memory against series terms, compile time against depth.

    python benchmarks/residual_step.py [--image 8] [--blocks 4] [--depths 10 100]

1. Memory: a full jitted training step (forward, Neumann-series log-det gradients, Adam update,
   power-iteration refresh) of an image Residual Flow with 2 and with 16 exact series terms
   (no roulette tail, so the term count is fixed). XLA's static memory analysis of the compiled
   step gives the scratch (``temp``) and total bytes. Goal: 16 terms need at most 1.15x the
   memory of 2 terms (the Neumann-series gradient keeps one Jacobian-vector product, not one
   per term). The same step with ``gradient="backprop"`` shows what is saved, and with
   ``remat_surrogate=False`` (the Neumann surrogate from plain JAX operations, its activations
   stored) what the default custom VJP saves.
2. Compile time: ``jit(step).lower(...).compile()`` wall time of a 2-D Residual Flow with 10 and
   with 100 blocks (stacked with ``nn.scan``). Goal: ratio at most 1.5.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import optax

from jflows import models as jm
from jflows.training import create_train_state, make_train_step


def step_memory(
    n_terms: int, gradient: str, size: int, blocks: int, batch: int, remat: bool = True
) -> tuple:
    flow = jm.resflow(
        (size, size, 1),
        n_blocks=blocks,
        hidden=32,
        fc_blocks=0,
        logdet="series",
        n_exact_terms=n_terms,
        gradient=gradient,
        remat_surrogate=remat,
    )
    x = jax.random.uniform(jax.random.key(0), (batch, size, size, 1))
    opt = optax.adam(1e-3)
    state = create_train_state(flow, opt, x, jax.random.key(1))
    step = make_train_step(flow, opt)
    compiled = step.lower(state, x, jax.random.key(2)).compile()
    mem = compiled.memory_analysis()
    total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    return mem.temp_size_in_bytes, total


def compile_seconds(blocks: int, batch: int = 500) -> float:
    flow = jm.resflow((2,), n_blocks=blocks, hidden=(128, 128), coeff=0.97)
    x = jax.random.normal(jax.random.key(0), (batch, 2))
    opt = optax.adam(1e-3)
    state = create_train_state(flow, opt, x, jax.random.key(1))
    step = make_train_step(flow, opt)
    start = time.perf_counter()
    step.lower(state, x, jax.random.key(2)).compile()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=int, default=8, help="image side (1 channel)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per scale")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--depths", type=int, nargs=2, default=(10, 100))
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"devices {jax.devices()}, jax {jax.__version__}"
    )

    print(
        f"\n1. peak memory of one training step, resflow {args.image}x{args.image}x1, "
        f"{args.blocks} blocks/scale, batch {args.batch}"
    )
    print(f"{'gradient':>17s} {'terms':>6s} {'temp MiB':>10s} {'total MiB':>10s}")
    results = {}
    for gradient, remat in (("neumann", True), ("neumann", False), ("backprop", True)):
        for n in (2, 16):
            temp, total = step_memory(n, gradient, args.image, args.blocks, args.batch, remat)
            results[gradient, n, remat] = total
            label = gradient if gradient == "backprop" or remat else "neumann, plain"
            print(f"{label:>17s} {n:6d} {temp / 2**20:10.2f} {total / 2**20:10.2f}")
    results = {k[:2]: v for k, v in results.items() if k[2]}
    ratio = results["neumann", 16] / results["neumann", 2]
    print(
        f"neumann 16/2 terms: {ratio:.3f} (goal <= 1.15); backprop 16/2: "
        f"{results['backprop', 16] / results['backprop', 2]:.3f}"
    )

    small, large = args.depths
    print(f"\n2. compile time of the training step, 2-D resflow, {small} vs {large} blocks")
    t_small = compile_seconds(small)
    t_large = compile_seconds(large)
    print(
        f"{small:4d} blocks: {t_small:6.2f} s\n{large:4d} blocks: {t_large:6.2f} s\n"
        f"ratio {t_large / t_small:.3f} (goal <= 1.5)"
    )


if __name__ == "__main__":
    main()
