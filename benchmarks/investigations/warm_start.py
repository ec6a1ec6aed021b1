"""Warm starts: the first training step of a first and a second run sharing one compile cache.

    python -m benchmarks.investigations.warm_start [--workloads w1 w3 w4] [--paths fit harness]

For every workload and path, a fresh process trains a few steps with an EMPTY persistent
compilation cache directory (the first run), then a second fresh process does the same with the
same directory (the second run, what a restart sees). Goal (issue 17): the second run's first
step is at most 25 % of the first run's.

Paths (both train the workload's jflows model):

* ``fit``: :func:`jflows.training.fit` with ``compile_cache=DIR`` (what ``jflows train`` runs);
  "first step" is the time from calling ``fit`` until its first training step has returned
  (data split, building and initialising the state, the batch sampler and the first step);
  "fit s" is the whole ``fit(steps=N)`` call (adds the final Lipschitz refresh and the test
  evaluation, both compiled too).
* ``harness``: the workload's own jflows stack (``--worker jflows --compile-cache DIR``);
  "first step" is the harness's first-step column (trace and compile of the training step),
  "setup s" its setup column (building the state: ``create_train_state``'s compiled init).

The breakdown table splits the second run's time per phase into JAX's own compile events
(``jax.monitoring``): tracing to a jaxpr, lowering to StableHLO, and the backend step (a cache
load on a hit, an XLA compilation on a miss); "other" is the rest (running the step, Python).
JAX only stores executables that took at least ``jax_persistent_cache_min_compile_time_secs``
(jflows sets ``MIN_COMPILE_SECONDS``) to compile. Tracing and lowering of the functions jflows
stores in its trace cache (:mod:`jflows.training.trace_cache`: init, training step, evaluation
step, Lipschitz refresh) are skipped by the second run ("traces loaded / traced"); those of the
rest (key splits, the batch sampler) are paid by every run.

A workload whose module does not exist yet (or has no ``jflows_flow``) prints a row saying so;
a workload joins by one entry in :data:`WORKLOADS` (its module must define ``WORKLOAD`` and
``jflows_flow(training=True)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import report

WORKLOADS = {
    "w1": "benchmarks.workloads.w1_resflow2d",
    "w3": "benchmarks.workloads.w3_glow_digits",
    "w4": "benchmarks.workloads.w4_resflow_digits",
}
"""Workload name -> module (with ``WORKLOAD`` and ``jflows_flow(training=...)``)."""
PATHS = ("fit", "harness")
GOAL = 0.25
EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "backend",
    "/jax/compilation_cache/cache_retrieval_time_sec": "load",
}
PHASES = {"fit": ("build", "init", "first step", "steps", "refresh", "eval"),
          "harness": ("setup", "first step", "steps", "test")}


# ---------------------------------------------------------------- child process


class Recorder:
    """Sums JAX's compile-event durations per phase; counts persistent-cache hits and misses."""

    def __init__(self):
        from jax import monitoring

        self.phase = "start"
        self.wall: dict[str, float] = {}
        self.events: dict[str, dict[str, float]] = {}
        self.functions: dict[str, float] = {}  # "phase kind function" -> seconds
        self.hits = self.requests = 0
        monitoring.register_event_duration_secs_listener(self._duration)
        monitoring.register_event_listener(self._event)

    def _duration(self, event, duration, fun_name=None, **_):
        if event in EVENTS:
            per = self.events.setdefault(self.phase, {})
            per[EVENTS[event]] = per.get(EVENTS[event], 0.0) + duration
            name = f"{self.phase}: {EVENTS[event]} {fun_name}"
            self.functions[name] = self.functions.get(name, 0.0) + duration

    def _event(self, event, **_):
        self.hits += event == "/jax/compilation_cache/cache_hits"
        self.requests += event == "/jax/compilation_cache/compile_requests_use_cache"

    def timed(self, phase, fn, after=None):
        """``fn`` whose first call is timed (blocked) and its events booked under ``phase``."""
        import jax

        calls = [0]

        def wrapped(*args, **kwargs):
            if calls[0]:
                self.phase = after or phase
                return fn(*args, **kwargs)
            calls[0] += 1
            self.phase = phase
            start = time.perf_counter()
            out = jax.block_until_ready(fn(*args, **kwargs))
            self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - start
            return out

        return wrapped


def child_fit(module, steps: int, cache: str, rec: Recorder) -> dict:
    import jflows.training.fit as _  # noqa: F401  (the module, not the function)
    from jflows.data import load_dataset

    fit_module = sys.modules["jflows.training.fit"]
    workload = module.WORKLOAD
    dataset = load_dataset(workload.data[0])
    model, eval_model = module.jflows_flow(training=True), module.jflows_flow(training=False)
    original = fit_module.build_fit_steps
    marks = {}

    def build(*args, **kwargs):
        start = time.perf_counter()
        rec.phase = "build"
        fns = original(*args, **kwargs)
        rec.wall["build"] = time.perf_counter() - start
        train = rec.timed("first step", fns.train, after="steps")

        def train_marked(*a, **k):
            out = train(*a, **k)
            marks.setdefault("first_step_done", time.perf_counter())
            return out

        return fns._replace(
            init=rec.timed("init", fns.init),
            next_batch=rec.timed("first step", fns.next_batch, after="steps"),
            train=train_marked,
            eval=rec.timed("eval", fns.eval),
            refresh=rec.timed("refresh", fns.refresh),
        )

    fit_module.build_fit_steps = build
    start = time.perf_counter()
    fit_module.fit(
        model, eval_model, dataset, steps=steps, batch_size=workload.batch,
        learning_rate=workload.lr, eval_every=steps, checkpoint_every=steps, progress=False,
        val_fraction=0.0, compile_cache=cache,
    )
    total = time.perf_counter() - start
    return dict(first_s=marks["first_step_done"] - start, total_s=total)


def child_harness(module, steps: int, cache: str, rec: Recorder) -> dict:
    from benchmarks.harness.workload import Stack, parser, worker

    workload = module.WORKLOAD
    build = workload.stacks["jflows"].build

    def phased(task):
        rec.phase = "setup"
        model = build(task)
        return dataclasses.replace(
            model,
            step=rec.timed("first step", model.step, after="steps"),
            test=rec.timed("test", model.test),
        )

    only = dataclasses.replace(workload, stacks={"jflows": Stack(phased, "jax")})
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        args = parser(only).parse_args(
            ["--steps", str(steps), "--data", workload.data[0], "--worker", "jflows",
             "--compile-cache", cache, "--result", out]
        )
        worker(only, args)
        with open(out) as f:
            result = json.load(f)
    rec.wall["setup"] = result["setup_s"]
    return dict(first_s=result["first_ms"] / 1e3, setup_s=result["setup_s"])


def child(args) -> None:
    rec = Recorder()
    module = importlib.import_module(WORKLOADS[args.child])
    run = child_fit if args.path == "fit" else child_harness
    result = run(module, args.steps, args.cache, rec)
    from jflows.training import trace_cache

    result.update(wall=rec.wall, events=rec.events, hits=rec.hits,
                  misses=rec.requests - rec.hits, functions=rec.functions,
                  traces=dict(trace_cache.stats))
    with open(args.result, "w") as f:
        json.dump(result, f)


# ---------------------------------------------------------------- parent process


def available(name: str) -> str | None:
    """None when the workload can run here, else why not."""
    try:
        module = importlib.import_module(WORKLOADS[name])
    except ModuleNotFoundError as err:
        return f"not written yet ({err.name})"
    if not hasattr(module, "jflows_flow"):
        return f"{WORKLOADS[name]} has no jflows_flow(training=...)"
    return None


def one_run(name: str, path: str, steps: int, cache: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "benchmarks.investigations.warm_start", "--child", name,
               "--path", path, "--steps", str(steps), "--cache", cache, "--result", out]
        env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                  os.path.abspath(__file__)))))
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return dict(error=" | ".join(tail))
        with open(out) as f:
            return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    p.add_argument("--steps", type=int, default=5, help="training steps per run")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from jflows.training.compile_cache import MIN_COMPILE_SECONDS

    print(report.machine_header())
    print(f"warm start: {args.steps} steps per run; cache min compile time "
          f"{MIN_COMPILE_SECONDS} s; each run a fresh process; first run: empty cache directory")
    rows, breakdown = [], []
    for name in args.workloads:
        why = available(name)
        if why:
            rows.append([name, "-", why, "", "", "", "", "", ""])
            continue
        for path in args.paths:
            with tempfile.TemporaryDirectory() as tmp:
                cache = os.path.join(tmp, "xla")
                first = one_run(name, path, args.steps, cache)
                second = one_run(name, path, args.steps, cache) if "error" not in first else {}
            print(f"  {name} {path}: done (load avg {os.getloadavg()[0]:.2f})", flush=True)
            rows.append(_row(name, path, first, second))
            if "events" in second:
                breakdown += _breakdown(name, path, second)
    print()
    report.print_table(
        ["workload", "path", "1st run: first step s", "2nd run: first step s", "ratio",
         f"goal <= {GOAL:.0%}", "1st / 2nd run: setup s (harness) or fit s",
         "2nd run: cache hits / compiled", "2nd run: traces loaded / traced"],
        rows,
    )
    print("\nsecond run, per phase: wall s = trace + lower + backend + other; backend = the "
          "cache key, then a cache load (a hit: 'of it load s') or an XLA compilation")
    report.print_table(["workload", "path", "phase", "wall s", "trace s", "lower s",
                        "backend s", "of it load s", "other s"], breakdown)


def _row(name, path, first, second) -> list[str]:
    for run in (first, second):
        if "error" in run:
            return [name, path, f"failed: {run['error'][:150]}", "", "", "", "", "", ""]
    ratio = second["first_s"] / first["first_s"]
    extra = "setup_s" if path == "harness" else "total_s"
    return [name, path, f"{first['first_s']:.2f}", f"{second['first_s']:.2f}", f"{ratio:.0%}",
            "met" if ratio <= GOAL else "NOT met",
            f"{first[extra]:.2f} / {second[extra]:.2f}", f"{second['hits']} / {second['misses']}",
            "{hits} / {stores}".format(**second.get("traces", {"hits": "-", "stores": "-"}))]


def _breakdown(name, path, run) -> list[list[str]]:
    rows = []
    for phase in PHASES[path]:
        if phase not in run["wall"]:
            continue
        ev = run["events"].get(phase, {})
        parts = [ev.get(k, 0.0) for k in ("trace", "lower", "backend")]
        wall = run["wall"][phase]
        rows.append([name, path, phase, f"{wall:.2f}", *(f"{v:.2f}" for v in parts),
                     f"{ev.get('load', 0.0):.2f}", f"{wall - sum(parts):.2f}"])
    return rows


if __name__ == "__main__":
    main()
