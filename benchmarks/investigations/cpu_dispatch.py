"""What JAX's synchronous CPU dispatch costs a small flow: W2's RealNVP, async against sync.

    python -m benchmarks.investigations.cpu_dispatch [--steps 2000] [--sync-every 50]

JAX runs a jitted call on CPU asynchronously by default: the call returns at once and a
worker thread runs the program, so Python prepares the next batch and step while XLA works.
``jax.config.update("jax_cpu_enable_async_dispatch", False)`` (before the first computation)
runs every program in the calling thread instead; that keeps W4's RSS from creeping while it
trains (``python -m benchmarks.investigations.w4_memory --dispatch async sync``), but the
Python between steps is no longer hidden. For each mode a fresh process trains the W2
RealNVP (``benchmarks.workloads.w2_realnvp2d.jflows_flow``: 8 couplings, MLPs 128-128) with
jflows' train step on moons, batch 500, gathering each batch on the device with a jitted
index and pulling the loss to the host every ``--sync-every`` steps (as ``fit`` does, every
50), and prints the mean ms per step after the first and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from benchmarks.harness import report

BATCH, SEED = 500, 0


def child(sync: bool, steps: int, sync_every: int) -> dict:
    import jax

    if sync:  # read when the CPU client is made: before any computation
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    import numpy as np
    import optax

    from benchmarks.harness import common
    from benchmarks.workloads.w2_realnvp2d import jflows_flow
    from jflows.training import create_train_state, make_train_step

    train, _ = common.toy_pools("moons", SEED)
    idx = common.index_table(len(train), steps, BATCH)
    flow, opt = jflows_flow(), optax.adam(1e-3)
    state = create_train_state(flow, opt, train[idx[0]], jax.random.key(SEED))
    step = make_train_step(flow, opt)
    pool, table = jax.device_put(train), jax.device_put(np.asarray(idx))
    keys = jax.random.split(jax.random.key(SEED + 1), steps)
    gather = jax.jit(lambda pool, table, i: pool[table[i]])
    state, metrics = step(state, gather(pool, table, 0), keys[0])
    float(metrics["loss"])  # the first step compiles: not timed
    start = time.perf_counter()
    for i in range(1, steps):
        state, metrics = step(state, gather(pool, table, i), keys[i])
        if i % sync_every == 0:
            float(metrics["loss"])
    loss = float(metrics["loss"])
    ms = (time.perf_counter() - start) / (steps - 1) * 1e3
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ms_per_step": ms, "peak_mb": peak, "loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--sync-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2, help="processes per mode, alternating")
    parser.add_argument("--child", choices=("async", "sync"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "sync", args.steps, args.sync_every)))
        return
    print(report.machine_header())
    rows = []
    for _ in range(args.repeats):
        for mode in ("async", "sync"):
            cmd = [sys.executable, "-m", "benchmarks.investigations.cpu_dispatch", "--child",
                   mode, "--steps", str(args.steps), "--sync-every", str(args.sync_every)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{mode}: child failed\n{proc.stderr[-3000:]}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append([mode, f"{out['ms_per_step']:.2f}", f"{out['peak_mb']:.0f}",
                         f"{out['loss']:.3f}"])
    report.print_table(["dispatch", "ms/step (mean)", "peak RSS MB", "last loss"], rows)


if __name__ == "__main__":
    main()
