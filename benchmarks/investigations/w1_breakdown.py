"""Where the W1 jflows step spends its time: compilation stages, a profile, micro-kernels.

    python benchmarks/w1_breakdown.py [--steps 20]

Prints, for the W1 model of ``w1_resflow2d.py`` (jflows only):

* the first step split into ``jax.jit(step).trace``, ``.lower``, ``.compile`` (with the CPU
  time the compilation used: above its wall time when XLA compiles kernels in parallel) and the
  run; ``TF_CPP_MIN_LOG_LEVEL=0 TF_CPP_VMODULE=cpu_compiler=1`` adds XLA's own timers (HLO
  passes versus code generation);
* a ``jax.profiler`` trace of ``--steps`` steps summed by XLA kernel kind (matmul fusions,
  plain dots, other fusions), per step;
* the median step time with the Neumann-gradient estimator as one custom VJP
  (``remat_surrogate=True``, the default) and as plain JAX operations (``False``);
* micro-kernels of this machine: a ``500x128 @ 128x128`` matmul, a ``500x128`` elementwise
  multiply, and the weight gradient of a ``128 -> 2`` dense layer stored ``(in, out)`` versus
  ``(out, in)`` (why ``LipschitzMLP`` stores narrowing kernels as ``(out, in)``).

Run it twice, once as is and once with ``MALLOC_MMAP_THRESHOLD_=2000000000
MALLOC_TRIM_THRESHOLD_=2000000000``, to see how much fresh-buffer page faults cost on a VM.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import resource
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.harness import common as C
from benchmarks.harness.report import machine_header
from benchmarks.workloads.w1_resflow2d import jflows_flow
from jflows.training import create_train_state, make_train_step


def per_call_us(fn, *args, n: int = 50) -> float:
    """Mean time per result of a jitted ``fn`` that returns a list of 20 results."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(n):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / n / 20 * 1e6


def micro_kernels() -> None:
    rng = np.random.default_rng(0)
    hs = [jnp.asarray(rng.random((500, 128), np.float32)) for _ in range(20)]
    cts = [jnp.asarray(rng.random((500, 2), np.float32)) for _ in range(20)]
    w = jnp.asarray(rng.random((128, 128), np.float32))
    w_in_out = jnp.asarray(rng.random((128, 2), np.float32))
    w_out_in = w_in_out.T

    matmul = jax.jit(lambda hs: [h @ w for h in hs])
    multiply = jax.jit(lambda hs: [h * 1.01 for h in hs])

    def loss_in_out(k, h, c):  # y = h @ K with K of shape (in, out)
        return jnp.sum((h @ k) * c)

    def loss_out_in(k, h, c):  # y = h @ K.T with K of shape (out, in)
        return jnp.sum((h @ k.T) * c)

    def grad_in_out(hs, cts):
        return [jax.grad(loss_in_out)(w_in_out, h, c) for h, c in zip(hs, cts)]

    def grad_out_in(hs, cts):
        return [jax.grad(loss_out_in)(w_out_in, h, c) for h, c in zip(hs, cts)]

    t_mm = per_call_us(matmul, hs)
    print(
        f"  matmul 500x128 @ 128x128: {t_mm:.1f} us ({2 * 500 * 128 * 128 / t_mm / 1e3:.0f} "
        "GFLOP/s)"
    )
    print(f"  elementwise multiply 500x128: {per_call_us(multiply, hs):.1f} us")
    print(
        f"  weight gradient of 128 -> 2, kernel stored (in, out): "
        f"{per_call_us(jax.jit(grad_in_out), hs, cts):.1f} us"
    )
    print(
        f"  weight gradient of 128 -> 2, kernel stored (out, in): "
        f"{per_call_us(jax.jit(grad_out_in), hs, cts):.1f} us"
    )


def median_step_ms(remat: bool, train, idx, keys, n: int = 40) -> float:
    """Median time of ``n`` W1 steps (after 5 warm-up steps) with ``remat_surrogate=remat``."""
    flow = jflows_flow(remat_surrogate=remat)
    opt = optax.adam(1e-3)
    state = create_train_state(flow, opt, train[idx[0]], jax.random.key(0))
    step = make_train_step(flow, opt)
    times = []
    for i in range(5 + n):
        start = time.perf_counter()
        state, metrics = step(state, train[idx[i]], keys[i])
        float(metrics["loss"])
        times.append(time.perf_counter() - start)
    return float(np.median(times[5:])) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20, help="profiled steps")
    args = p.parse_args()
    print(machine_header())
    train, _ = C.toy_pools("moons")
    n_idx = max(10 + args.steps, 45)
    idx, keys = C.index_table(len(train), n_idx, C.BATCH_2D), C.step_keys(n_idx)
    flow = jflows_flow()
    opt = optax.adam(1e-3)
    state = create_train_state(flow, opt, train[idx[0]], jax.random.key(0))
    step = make_train_step(flow, opt)

    x, key = train[idx[0]], keys[0]
    t0 = time.perf_counter()
    traced = step.trace(state, x, key)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    compiled = lowered.compile()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    t3 = time.perf_counter()
    compile_cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    state, metrics = compiled(state, x, key)
    float(metrics["loss"])
    t4 = time.perf_counter()
    print(
        f"\nfirst step: trace {t1 - t0:.2f} s, lower {t2 - t1:.2f} s, compile {t3 - t2:.2f} s, "
        f"run {t4 - t3:.3f} s; compile used {compile_cpu:.2f} s of CPU"
    )

    for i in range(1, 10):
        state, metrics = step(state, train[idx[i]], keys[i])
        float(metrics["loss"])
    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            for i in range(10, 10 + args.steps):
                state, metrics = step(state, train[idx[i]], keys[i])
                float(metrics["loss"])
            wall = (time.perf_counter() - start) / args.steps
        (path,) = glob.glob(f"{log_dir}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name.startswith(("$", "Thunk", "while", "Pjit", "np.", "Common")):
            continue
        kind = (
            "matmul fusions"
            if "ynn" in name or "xnn" in name
            else ("dots" if name.startswith("dot") else "other kernels")
        )
        total[kind] += e.get("dur", 0)
    print(
        f"\nprofile of {args.steps} steps: {wall * 1e3:.1f} ms/step wall (kernels overlap on "
        "two cores, so their sum can exceed it)"
    )
    for kind in ("matmul fusions", "dots", "other kernels"):
        print(f"  {kind}: {total[kind] / args.steps / 1e3:.1f} ms/step")
    print("\nNeumann-gradient estimator, median of 40 steps")
    for remat in (True, False):
        print(f"  remat_surrogate={remat}: {median_step_ms(remat, train, idx, keys):.1f} ms/step")
    print("\nmicro-kernels")
    micro_kernels()


if __name__ == "__main__":
    main()
