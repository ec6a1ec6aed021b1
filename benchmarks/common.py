"""Shared harness of the side-by-side benchmarks W1-W3 (``reference/workloads.md``).

Every stack of a workload runs in its own child process (``--worker STACK``), so its peak RSS
(``ru_maxrss``) is its own and torch and JAX never share a process; the parent prints the
machine/version header and one table. Data pools, the batch index table and the test
dequantization draws are built from fixed seeds in each process, so every stack sees the same
batches in the same order and is scored on the same points.

Timed per step: batch gather from the pool, forward, backward, optimiser update (plus the
spectral-norm refresh in W1) and pulling the loss to the host (``float(loss)`` /
``loss.item()``). Reported: median over the steps after the first 5, p10/p90, the first step
(JAX: trace + compile), peak RSS after training and at the end (after the test evaluation).
torch keeps its default thread count unless ``--torch-threads`` is given; on a 2-core machine
that other processes keep busy, torch's 2 OpenMP threads can be 10-100x slower per step.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

N_TRAIN, N_TEST, BATCH_2D = 100_000, 5_000, 500
BATCH_DIGITS, DIGITS_LEVELS, DIGITS_DIMS = 64, 17, 64
INDEX_SEED, DEQUANT_SEED, TEST_DRAWS = 1234, 4321, 8
WARMUP = 5
SEED = 0
"""Seed of the model initialisation and of the per-step keys (``--seed``); the data, the batch
order and the test dequantization stay fixed."""
PEERS = ("torch", "normflows", "flowjax", "distrax", "equinox", "paramax")
NOT_INSTALLED = "not installed (pip install -e '.[bench]')"
VERSIONS = "jax jaxlib flax optax numpy scikit-learn torch normflows flowjax equinox distrax"


# ---------------------------------------------------------------- data


def toy_pools(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train pool (100 000) and test set (5 000) of ``moons`` or ``8gaussians``, float32.

    ``moons`` is ``make_moons(noise=0.05)`` standardised with the train pool's mean/std;
    ``8gaussians`` is FFJORD's set from ``jflows.data.sample_toy`` (not standardised).
    """
    if name == "moons":
        from sklearn.datasets import make_moons

        train = make_moons(N_TRAIN, noise=0.05, random_state=seed)[0]
        test = make_moons(N_TEST, noise=0.05, random_state=seed + 1)[0]
        mean, std = train.mean(axis=0), train.std(axis=0)
        train, test = (train - mean) / std, (test - mean) / std
    elif name == "8gaussians":
        from jflows.data import sample_toy

        train, test = sample_toy(name, N_TRAIN, seed), sample_toy(name, N_TEST, seed + 1)
    else:
        raise SystemExit(f"unknown 2-D data {name!r}; use moons or 8gaussians")
    return np.ascontiguousarray(train, np.float32), np.ascontiguousarray(test, np.float32)


def digits_pools() -> tuple[np.ndarray, np.ndarray]:
    """The fixed 1500/297 split of sklearn's digits, uint8 levels 0..16, shape (N, 8, 8, 1)."""
    from jflows.data import load_dataset

    ds = load_dataset("digits")
    return ds.train, ds.test


def index_table(n_pool: int, steps: int, batch: int, seed: int = INDEX_SEED) -> np.ndarray:
    """``(steps, batch)`` row indices: consecutive epochs of fixed permutations, chunked."""
    rng = np.random.default_rng(seed)
    need = steps * batch
    perms = [rng.permutation(n_pool) for _ in range(-(-need // n_pool))]
    return np.concatenate(perms)[:need].reshape(steps, batch)


def dequant_draws(levels_u8: np.ndarray, n: int = TEST_DRAWS) -> np.ndarray:
    """``n`` fixed dequantizations ``k + u`` (level units, float32), shape ``(n, *x.shape)``."""
    u = np.random.default_rng(DEQUANT_SEED).random((n, *levels_u8.shape))
    k = levels_u8.astype(np.float64)[None]
    return np.minimum(k + u, np.nextafter(k + 1.0, 0.0)).astype(np.float32)


# ---------------------------------------------------------------- measuring


def rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_loop(step: Callable[[int], float], steps: int) -> tuple[list[float], list[float]]:
    """Runs ``step(i)`` (which must return the loss as a Python float) and times each call."""
    times, losses = [], []
    for i in range(steps):
        start = time.perf_counter()
        loss = step(i)
        times.append(time.perf_counter() - start)
        losses.append(loss)
    return times, losses


def summary(times: list[float], losses: list[float], **extra) -> dict:
    """Median / p10 / p90 (ms) over the steps after the first 5, first step, RSS, losses."""
    t = np.asarray(times[WARMUP:] if len(times) > WARMUP else times) * 1e3
    tail = [v for v in losses[-50:] if math.isfinite(v)]
    return dict(
        status="ok",
        steps=len(times),
        median_ms=float(np.median(t)),
        p10_ms=float(np.percentile(t, 10)),
        p90_ms=float(np.percentile(t, 90)),
        first_ms=times[0] * 1e3,
        warmup_s=float(sum(times[:WARMUP])),
        rss_train_mb=rss_mb(),
        loss_end=float(np.mean(tail)) if tail else float("nan"),
        nonfinite_losses=sum(not math.isfinite(v) for v in losses),
        **extra,
    )


def count_params(tree) -> int:
    """Number of scalars in the array leaves of a pytree."""
    import jax

    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))


def step_keys(steps: int) -> list:
    """One JAX key per step (from ``1 + SEED``), split before the timed loop."""
    import jax

    return list(jax.random.split(jax.random.key(1 + SEED), steps))


# ---------------------------------------------------------------- processes


def machine_header() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    vers = []
    for name in VERSIONS.split():
        try:
            vers.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            vers.append(f"{name} -")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (
        f"machine: {platform.platform()}; CPU {cpu}; {os.cpu_count()} cores "
        f"({usable} usable); load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        f"python {platform.python_version()}; " + ", ".join(vers)
    )


def parser(doc: str, default_steps: int, data: tuple[str, ...], stacks: tuple[str, ...]):
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--steps", type=int, default=default_steps, help="training steps per stack")
    p.add_argument("--data", nargs="+", default=[data[0]], choices=data)
    p.add_argument("--stacks", nargs="+", default=list(stacks), choices=stacks)
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the normflows rows (default: torch's own; "
        "on a machine busy with other work 1 avoids OpenMP oversubscription)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every stack's initialisation and step noise (data and batches fixed); "
        "rerun with several seeds to see how much the test NLL moves",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p


def worker(runners: dict[str, Callable], args) -> None:
    """Child process: runs one stack on one data set and writes its result as JSON."""
    global SEED
    SEED = args.seed
    try:
        if args.torch_threads and args.worker == "normflows":
            import torch

            torch.set_num_threads(args.torch_threads)
        result = runners[args.worker](args.data[0], args.steps)
        result["rss_end_mb"] = rss_mb()
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in PEERS:
            raise
        result = dict(status="missing", error=str(err))
    with open(args.result, "w") as f:
        json.dump(result, f)


def run_stacks(script: str, args, data: str, extra: list[str] = ()) -> dict[str, dict]:
    """Runs each requested stack in its own process, one after another.

    ``extra`` are further command-line arguments for the workers (a workload's own options).
    """
    results = {}
    for stack in args.stacks:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            cmd = [
                sys.executable,
                script,
                "--worker",
                stack,
                "--data",
                data,
                "--steps",
                str(args.steps),
                "--result",
                out,
                "--seed",
                str(args.seed),
                *extra,
            ]
            if args.torch_threads:
                cmd += ["--torch-threads", str(args.torch_threads)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0 and os.path.exists(out):
                with open(out) as f:
                    results[stack] = json.load(f)
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                results[stack] = dict(status="failed", error=" | ".join(tail))
            results[stack]["process_s"] = time.perf_counter() - start
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"  [{data}] {stack}: {results[stack]['status']} "
            f"({results[stack]['process_s']:.0f} s; load avg after: {load:.2f})",
            flush=True,
        )
    return results


# ---------------------------------------------------------------- reporting


def fmt(value, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN" if isinstance(value, float) else "-"
    return format(value, spec)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(row):  # first column left-aligned, the others right-aligned
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        )

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def standard_rows(results: dict[str, dict], labels: dict[str, str], score: str) -> tuple:
    """Table headers and rows shared by the workloads; ``score`` names the test column."""
    headers = ["stack", "ms/step", "p10-p90", "first step ms", "setup s"]
    headers += ["peak RSS MB train/end", "params", score, "train loss end"]
    rows = []
    for stack, r in results.items():
        label = labels.get(stack, stack)
        if r.get("torch_threads"):
            label += f" ({r['torch_threads']} torch thr.)"
        if r["status"] == "missing":
            rows.append([label, NOT_INSTALLED] + [""] * (len(headers) - 2))
            continue
        if r["status"] != "ok":
            rows.append([label, f"failed: {r.get('error', '')[:150]}"] + [""] * 7)
            continue
        rows.append(
            [
                label,
                fmt(r["median_ms"]),
                f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}",
                fmt(r["first_ms"], ".0f"),
                fmt(r.get("setup_s"), ".2f"),
                f"{r['rss_train_mb']:.0f} / {r['rss_end_mb']:.0f}",
                f"{r['params']:,}",
                fmt(r.get("test"), ".3f"),
                fmt(r.get("loss_end"), ".3f"),
            ]
        )
    return headers, rows


def speedup(results: dict[str, dict], slow: str, fast: str = "jflows") -> float | None:
    """``median(slow) / median(fast)``, or None when either did not run."""
    a, b = results.get(slow, {}), results.get(fast, {})
    if a.get("status") != "ok" or b.get("status") != "ok":
        return None
    return a["median_ms"] / b["median_ms"]


def goal_line(text: str, value: float | None, goal: float, higher_is_better: bool = True) -> str:
    if value is None:
        return f"  {text}: - (a stack did not run)"
    met = value >= goal if higher_is_better else value <= goal
    return (
        f"  {text}: {value:.2f} (goal {'>=' if higher_is_better else '<='} {goal:g}: "
        f"{'met' if met else 'NOT met'})"
    )
