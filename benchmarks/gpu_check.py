"""GPU readiness: the jflows rows of W1-W5 with small step counts, on the device JAX chose.

    python -m benchmarks.gpu_check [--steps 50] [--workloads w1 w2 w3 w4 w5] [--points 20000]

For a quick check on an accelerator (and here, on CPU, which is how it is tested: no GPU was
available when it was written; run it on a GPU machine once and record its table with the
machine). Every workload runs unchanged (its own jflows builder, data and batches, in this one
process); per workload the table shows:

* the device JAX chose (``jax.devices()[0]``) and whether the state lives there;
* the dtype: every floating leaf of the parameters and the loss must be float32 (x64 off);
* the first step (trace + compile + one step) and the mean ms/step of the remaining steps,
  dispatched back to back without pulling the loss (so an accelerator's asynchronous dispatch
  shows; not the workloads' median, which pulls the loss every step);
* host syncs in the step, checked twice: the steps after the first run under
  ``jax.transfer_guard_device_to_host("disallow")`` (any implicit device-to-host transfer in
  the step raises: ``float(x)``, ``np.asarray(x)``, Python control flow on a value), and the
  StableHLO of every function compiled by the first step is searched for host callbacks
  (``jax.debug.callback``/``pure_callback`` custom calls, which the guard does not see);
* whether the losses are finite.

W5 (batched ``log_prob``) has no training step: its row scores ``--points`` points with
``jflows.evaluate_log_prob`` (which fetches the results once at the end, by design, so the
guard does not apply); the callback search does. A workload whose module is missing prints a
row saying so; another joins by one entry in :data:`TRAINING` (a harness workload) or
:data:`SCORING` (a W5 model).
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time

import numpy as np

from benchmarks.harness import common, report

TRAINING = {
    "w1": "benchmarks.workloads.w1_resflow2d",
    "w2": "benchmarks.workloads.w2_realnvp2d",
    "w3": "benchmarks.workloads.w3_glow_digits",
    "w4": "benchmarks.workloads.w4_resflow_digits",
}
"""Harness workloads (a ``WORKLOAD`` with a ``jflows`` stack): name -> module."""
SCORING = {"w5": ("benchmarks.workloads.w5_log_prob", ("realnvp", "resflow", "glow"))}
"""W5: module and the models whose jflows scorer is checked."""
CALLBACK_MARKERS = ("callback",)  # xla_python_cpu_callback, xla_ffi_python_gpu_callback, ...
COMPILES: list[str] = []
"""Every function XLA compiled (or loaded from a cache) in this process, in order."""


def _count_compiles() -> None:
    from jax import monitoring

    def listen(event, duration, fun_name=None, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            COMPILES.append(str(fun_name))

    monitoring.register_event_duration_secs_listener(listen)


def _dumped_callbacks(folder: str) -> int:
    """How many dumped StableHLO modules hold a host-callback custom call."""
    count = 0
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            text = f.read()
        count += any(marker in text for marker in CALLBACK_MARKERS)
    return count


def _first_call(fn):
    """``fn()`` with the IR it compiles dumped; returns (result, seconds, callback modules)."""
    import jax

    with tempfile.TemporaryDirectory() as dump:
        jax.config.update("jax_dump_ir_to", dump)
        try:
            start = time.perf_counter()
            out = jax.block_until_ready(fn())
            seconds = time.perf_counter() - start
        finally:
            jax.config.update("jax_dump_ir_to", "")
        return out, seconds, _dumped_callbacks(dump)


def _float32(tree) -> str:
    import jax

    kinds = {str(leaf.dtype) for leaf in jax.tree.leaves(tree)
             if hasattr(leaf, "dtype") and np.issubdtype(leaf.dtype, np.floating)}
    return "float32" if kinds == {"float32"} else "NOT float32: " + ",".join(sorted(kinds))


def check_training(name: str, module_name: str, steps: int) -> list[str]:
    import jax

    from benchmarks.harness.jax_runner import JaxModel
    from benchmarks.harness.workload import Task, parser

    workload = importlib.import_module(module_name).WORKLOAD
    args = parser(workload).parse_args(["--steps", str(steps), "--stacks", "jflows"])
    data = workload.data[0]
    train, test = workload.pools(data)
    idx = common.index_table(len(train), steps, workload.batch)
    task = Task(data, steps, args.seed, workload.lr, train, test, idx, args)
    keys = common.step_keys(steps, task.seed)
    model: JaxModel = workload.stacks["jflows"].build(task)
    state = jax.block_until_ready(model.state)
    device = jax.devices()[0]
    on_device = all(device in leaf.devices() for leaf in jax.tree.leaves(state)
                    if isinstance(leaf, jax.Array))
    (state, loss), first_s, callbacks = _first_call(
        lambda: model.step(state, train[idx[0]], keys[0]))
    losses = [loss]
    guard = "none"
    compiled = len(COMPILES)
    start = time.perf_counter()
    try:
        with jax.transfer_guard_device_to_host("disallow"):
            for i in range(1, steps):
                state, loss = model.step(state, train[idx[i]], keys[i])
                losses.append(loss)
        jax.block_until_ready(state)
    except Exception as err:  # noqa: BLE001 - the guard's error is the finding
        guard = f"FOUND: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
    ms = (time.perf_counter() - start) / max(steps - 1, 1) * 1e3
    again = COMPILES[compiled:]
    values = np.asarray(jax.device_get(losses), np.float64)
    dtype = _float32((model.params(state), losses[0]))
    return [name, f"{data}, batch {workload.batch}", str(device), "yes" if on_device else "NO",
            dtype, f"{first_s:.2f}", f"{ms:.1f} ({steps - 1} steps)",
            ", ".join(again) if again else "none", guard, str(callbacks),
            "yes" if np.all(np.isfinite(values)) else "NO"]


def check_scoring(name: str, module_name: str, model: str, points: int) -> list[str]:
    import jax

    w5 = importlib.import_module(module_name)
    batch = min(w5.BATCH[model], points)
    x = w5.points(model, points)
    score = w5.BUILDERS[model, "jflows"](batch, 0)
    out, first_s, callbacks = _first_call(lambda: score(x[:batch]))
    compiled = len(COMPILES)
    start = time.perf_counter()
    out = score(x)
    ms = (time.perf_counter() - start) * 1e3
    device = jax.devices()[0]
    return [f"{name} {model}", f"{points} points, batch {batch}", str(device), "-",
            str(np.asarray(out).dtype), f"{first_s:.2f}", f"{ms:.1f} (one pass)",
            ", ".join(COMPILES[compiled:]) or "none", "n/a (results fetched once)", str(callbacks),
            "yes" if np.all(np.isfinite(out)) else "NO"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [*TRAINING, *SCORING]
    p.add_argument("--workloads", nargs="+", default=names, choices=names)
    p.add_argument("--steps", type=int, default=50, help="training steps per workload")
    p.add_argument("--points", type=int, default=20_000, help="points W5 scores per model")
    args = p.parse_args()
    import jax

    _count_compiles()
    print(report.machine_header())
    print(f"jax.devices(): {jax.devices()}; default backend {jax.default_backend()}; "
          f"x64 {'on' if jax.config.jax_enable_x64 else 'off'}")
    rows = []
    for name in args.workloads:
        module = TRAINING.get(name) or SCORING[name][0]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            rows.append([name, f"not written yet ({err.name})", *[""] * 9])
            continue
        try:
            if name in TRAINING:
                rows.append(check_training(name, module, args.steps))
            else:
                rows += [check_scoring(name, module, m, args.points) for m in SCORING[name][1]]
        except Exception as err:  # noqa: BLE001 - one failing workload must not hide the rest
            rows.append([name, f"failed: {type(err).__name__}: {err}"[:150], *[""] * 9])
        print(f"  {name}: done", flush=True)
    print()
    report.print_table(
        ["workload", "data", "device", "state on it", "dtype", "first step s",
         "ms/step (dispatched)", "compiled after the first step", "device->host in step",
         "host callbacks", "finite"],
        rows,
    )


if __name__ == "__main__":
    main()
