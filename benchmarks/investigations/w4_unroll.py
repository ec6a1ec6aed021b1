"""W4's training step with its 8 blocks unrolled (the default) or rolled: memory, speed, convs.

    python -m benchmarks.investigations.w4_unroll [--unroll 0 1 2]

Each setting in a fresh process: the W4 jflows flow (``benchmarks.workloads.w4_resflow_digits``)
with ``Stack(unroll=...)`` for training (0: all blocks, the workload's setting), its state on
64 digits, then the training step compiled ahead of time. Printed per setting: peak RSS after
the state's initialisation and after compiling the step, the compile time, the optimised HLO's
instruction count and convolution layouts (``dim_labels``), and ms per step (median of 20 after
3 warm-up steps). W4's peak RSS (issue 17: no higher than normflows') is set by this compile;
a rolled loop compiles a smaller program but, on XLA:CPU, leaves the kernel-gradient
convolutions inside the loop in non-canonical layouts (``f01b_i01o->...``), which run slowly.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import resource
import subprocess
import sys
import time

from benchmarks.harness import report


def _rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def child(unroll: int) -> dict:
    import jax
    import numpy as np
    import optax

    from benchmarks.workloads import w4_resflow_digits as w4
    from jflows.data.digits import load_digits_split
    from jflows.training import create_train_state, make_train_step

    flow = w4.jflows_flow(training=True, unroll=unroll or True)
    x = load_digits_split()[0][:64]
    opt = optax.adam(1e-3)
    state = create_train_state(flow, opt, x, jax.random.key(0))
    init_rss = _rss_mb()
    step = make_train_step(flow, opt)
    start = time.perf_counter()
    compiled = step.lower(state, x, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - start
    compile_rss = _rss_mb()
    text = compiled.as_text()
    convs = collections.Counter(re.findall(r"convolution\(.*?dim_labels=([^,}\s]+)", text))
    for i in range(3):
        state, metrics = compiled(state, x, jax.random.key(i))
    jax.block_until_ready(metrics)
    times = []
    for i in range(20):
        start = time.perf_counter()
        state, metrics = compiled(state, x, jax.random.key(i))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return dict(unroll=unroll, init_rss=init_rss, compile_rss=compile_rss, compile_s=compile_s,
                instructions=text.count("\n"), convs=dict(convs),
                ms=1000 * float(np.median(times)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--unroll", type=int, nargs="+", default=[0, 1],
                   help="blocks per loop iteration (0: all, the workload's setting)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    print(report.machine_header())
    rows = []
    for unroll in args.unroll:
        out = subprocess.run([sys.executable, "-m", "benchmarks.investigations.w4_unroll",
                              "--child", str(unroll)], capture_output=True, text=True)
        if out.returncode != 0:
            rows.append([str(unroll), "failed: " + out.stderr.strip().splitlines()[-1][:120]]
                        + [""] * 6)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        convs = ", ".join(f"{k} x{v}" for k, v in sorted(r["convs"].items()))
        rows.append([str(unroll) if unroll else "all (8)", str(r["init_rss"]),
                     str(r["compile_rss"]), f"{r['compile_s']:.1f}", str(r["instructions"]),
                     f"{r['ms']:.1f}", convs])
    report.print_table(["unroll", "peak RSS MB after init", "after step compile", "compile s",
                        "HLO lines", "ms/step", "convolutions (dim_labels x count)"], rows)


if __name__ == "__main__":
    main()
