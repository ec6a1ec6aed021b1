"""Where W4's peak RSS goes: the jflows stack's resident memory phase by phase.

    python -m benchmarks.investigations.w4_memory [--emitters default auto] [--steps 1000]
        [--dispatch async sync] [--malloc-trim] [--trim-every N] [--free-init]
        [--conv-opt-level L]

For each setting of ``JFLOWS_CPU_FUSION_EMITTERS`` (:mod:`jflows.training.xla_options`), a
fresh process runs W4's jflows stack exactly as ``benchmarks.workloads.w4_resflow_digits`` does
(its worker, seed 0, shared initial weights) while a thread samples the resident set size every
2 ms. Printed per phase: the RSS at its end and the highest RSS seen during it; the last column
is the process's peak (``ru_maxrss``, what the workload's "peak RSS" column shows). Phases:
imports of JAX and the harness; loading the data pools (built by a short-lived process, as the
workload's parent has them built), the step keys (the first JAX computations of the process,
which start XLA's compiler) and the import of jflows; building and initialising the state
(``create_train_state``, its compiled init); loading the shared weights; the first training
step (tracing and compiling the step); steps 2-100; steps 101-end (glibc keeps freed buffers in
per-thread arenas, so RSS creeps up by multiples of the step's 18 MB of temporaries while
training); scoring the test set.

``--malloc-trim`` (a probe, glibc only): at the end of every phase the child calls
``malloc_trim(0)``, which returns the allocator's free pages to the system, and a last column
shows the RSS after it: what is live rather than kept by the allocator. jflows does not do
this itself (it is a setting of the whole process). ``--trim-every N`` (a probe, with or
without ``--malloc-trim``) also calls it after every N-th training step, which bounds the creep
of the per-thread arenas while training.

``--dispatch async sync`` runs each emitter setting once per CPU dispatch mode: ``sync`` sets
JAX's ``jax_cpu_enable_async_dispatch`` to False before the first computation, so every
program runs in the calling thread instead of on a worker thread (glibc gives each thread
that allocates its own arena, and each arena keeps a copy of the step's freed temporaries).
``--free-init`` (a probe) clears JAX's caches after the shared weights are loaded, which
frees the compiled init program and its traces, and adds a phase "init freed". The table
ends with each child's median ms per step and first step (its compilation), so a memory
saving is seen beside its cost. ``--conv-opt-level L ...`` (a probe, one run per level)
compiles the programs with convolutions at LLVM level ``L`` instead of jflows' 2
(``jflows.training.xla_options.CONVOLUTION_OPT_LEVEL``).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.harness import report
from benchmarks.harness.workload import make_pools

MALLOC_TRIM = functools.cache(lambda: ctypes.CDLL("libc.so.6").malloc_trim)  # glibc only
PHASES = ("imports", "data, keys, library imports", "init state", "shared weights", "init freed",
          "first step", "steps 2-100", "steps 101-end", "test score")


class _Sampler:
    """The current RSS, and the highest since the last mark, sampled by a daemon thread."""

    def __init__(self, trim: bool = False):
        self.high, self.marks = 0.0, []
        self.trim = MALLOC_TRIM() if trim else None
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def now() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self):
        while True:
            self.high = max(self.high, self.now())
            time.sleep(0.002)

    def mark(self, phase: str) -> None:
        now = self.now()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        trimmed = None
        if self.trim is not None:
            self.trim(0)
            trimmed = self.now()
        self.marks.append((phase, now, max(self.high, now), peak, trimmed))
        self.high = 0.0


def child(steps: int, out: str, pools: str, trim: bool = False, sync: bool = False,
          free_init: bool = False, trim_every: int = 0, conv_opt_level: int | None = None) -> None:
    sampler = _Sampler(trim)
    trim_now = MALLOC_TRIM() if trim_every else None
    import gc

    import jax

    if sync:  # read when the CPU client is made: before any computation
        jax.config.update("jax_cpu_enable_async_dispatch", False)

    from benchmarks.harness import common, jax_runner
    from benchmarks.harness.workload import main
    from benchmarks.workloads import w4_resflow_digits as w4

    if conv_opt_level is not None:  # read by compiler_options at each compilation
        from jflows.training import xla_options

        xla_options.CONVOLUTION_OPT_LEVEL = conv_opt_level
    sampler.mark("imports")

    def around(module, name, before=None, after=None):
        fn = getattr(module, name)

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            if before:
                sampler.mark(before)
            result = fn(*args, **kwargs)
            if after:
                sampler.mark(after)
            return result

        setattr(module, name, wrapped)

    around(jax_runner, "jflows_model", before="data, keys, library imports")
    around(w4, "shared_init", before="init state")
    around(w4, "load_into_jflows", after="shared weights")
    if free_init:
        load = w4.load_into_jflows

        def load_and_free(*args, **kwargs):
            state = jax.block_until_ready(load(*args, **kwargs))
            jax.clear_caches()
            gc.collect()
            sampler.mark("init freed")
            return state

        w4.load_into_jflows = load_and_free
    loop = common.train_loop

    def train_loop(step, n):
        def marked(i):
            value = step(i)
            if trim_now is not None and (i + 1) % trim_every == 0:
                trim_now(0)
            if i in (0, 99):
                sampler.mark("first step" if i == 0 else "steps 2-100")
            return value

        result = loop(marked, n)
        sampler.mark("steps 101-end")
        return result

    common.train_loop = train_loop
    sys.argv = ["w4", "--stacks", "jflows", "--seed", "0", "--steps", str(steps),
                "--worker", "jflows", "--data", "digits", "--result", out + ".worker",
                "--pools", pools]
    main(w4.WORKLOAD)
    sampler.mark("test score")
    with open(out, "w") as f:
        json.dump(sampler.marks, f)


def run_child(args: argparse.Namespace, emitters: str, dispatch: str, level: int | None,
              pools: str, directory: str) -> tuple[list, dict]:
    """One setting in a fresh process: its phase marks and the worker's result."""
    out = os.path.join(directory, f"{emitters}_{dispatch}_{level}.json")
    env = {**os.environ, "JFLOWS_CPU_FUSION_EMITTERS": emitters, "JFLOWS_TRACE_CACHE": "off"}
    flags = [flag for flag, on in (("--malloc-trim", args.malloc_trim),
                                   ("--free-init", args.free_init),
                                   ("--sync", dispatch == "sync")) if on]
    if args.trim_every:
        flags += ["--trim-every", str(args.trim_every)]
    if level is not None:
        flags += ["--conv-opt-level", str(level)]
    cmd = [sys.executable, "-m", "benchmarks.investigations.w4_memory", "--steps",
           str(args.steps), "--child", out, "--pools", pools, *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{emitters}, {dispatch}, LLVM {level}: child failed\n"
                         f"{proc.stderr[-3000:]}")
    with open(out) as f, open(out + ".worker") as g:
        return json.load(f), json.load(g)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emitters", nargs="+", default=["default", "auto"])
    parser.add_argument("--dispatch", nargs="+", choices=("async", "sync"), default=["async"],
                        help="JAX's CPU dispatch: async (its default) or sync")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--malloc-trim", action="store_true",
                        help="probe: malloc_trim(0) after every phase, RSS after it shown")
    parser.add_argument("--free-init", action="store_true",
                        help="probe: clear JAX's caches once the initial state is built")
    parser.add_argument("--trim-every", type=int, default=0, metavar="N",
                        help="probe: malloc_trim(0) after every N-th training step")
    parser.add_argument("--conv-opt-level", type=int, nargs="+", choices=(0, 1, 2, 3),
                        help="probe: LLVM levels of the programs with convolutions, one run "
                        "each (jflows: 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pools", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        level = args.conv_opt_level[0] if args.conv_opt_level else None
        child(args.steps, args.child, args.pools, args.malloc_trim, args.sync, args.free_init,
              args.trim_every, level)
        return
    print(report.machine_header())
    rows, speeds = [], []
    with tempfile.TemporaryDirectory() as work:  # the pools and the children's results
        pools = make_pools("digits", work,  # built by a child: this process stays small
                           [sys.executable, "-m", "benchmarks.workloads.w4_resflow_digits"])
        for emitters, dispatch, level in itertools.product(
                args.emitters, args.dispatch, args.conv_opt_level or [None]):
            setting = emitters if level is None else f"{emitters}, LLVM {level}"
            marks, result = run_child(args, emitters, dispatch, level, pools, work)
            speeds.append([setting, dispatch, f"{result['median_ms']:.1f}",
                           f"{result['first_ms'] / 1e3:.2f}"])
            for phase, now, high, peak, trimmed in marks:
                row = [setting, dispatch, phase, f"{now:.0f}", f"{high:.0f}", f"{peak:.0f}"]
                rows.append(row + ([f"{trimmed:.0f}"] if args.malloc_trim else []))
    header = ["emitters", "dispatch", "phase", "RSS at end MB", "highest in phase MB",
              "process peak MB"]
    report.print_table(header + (["after malloc_trim MB"] if args.malloc_trim else []), rows)
    print()
    report.print_table(["emitters", "dispatch", "ms/step (median)", "first step s"], speeds)


if __name__ == "__main__":
    main()
