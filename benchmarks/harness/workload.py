"""One command per workload: a parent process launches one child process per stack.

Every stack of a workload runs in its own child process (``--worker STACK``), so its peak RSS
(``ru_maxrss``) is its own and torch and JAX never share a process; the parent prints the
machine/version header and one table per data set. A short-lived child builds the data pools
once per data set and hands them to the stacks' children in a ``.npz`` file, so that a stack's
process imports only its own library (building digits' pools imports jflows, JAX and scikit-
learn, which a PyTorch stack's peak RSS would otherwise include: ``benchmarks/README.md``, "Why
the misses"); a stack that imported the other library anyway is named under the table. The
parent itself stays small, since a child's peak RSS starts from its parent's. The child builds
the batch index table and hands both to the runner of the stack's kind (``jax_runner`` or
``torch_runner``), which times the steps and scores the test set.

torch keeps its default thread count unless ``--torch-threads`` is given; on a 2-core machine
that other processes keep busy, torch's 2 OpenMP threads can be 10-100x slower per step.
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
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.harness import common, report

PEERS = ("torch", "normflows", "flowjax", "distrax", "equinox", "paramax")
"""Top-level modules whose absence marks a stack "not installed" instead of failed."""
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Task:
    """What a stack's builder gets: the data, the batch table and the workload's options."""

    data: str
    steps: int
    seed: int
    lr: float
    train: np.ndarray
    test: np.ndarray
    idx: np.ndarray
    args: argparse.Namespace


@dataclasses.dataclass(frozen=True)
class Stack:
    """One stack of a workload: ``build(task)`` returns the model its ``runner`` trains.

    ``runner`` is ``"jax"`` (``build`` returns a ``jax_runner.JaxModel``) or ``"torch"``
    (a ``torch_runner.TorchModel``).
    """

    build: Callable[[Task], Any]
    runner: str
    label: str | None = None


@dataclasses.dataclass(frozen=True)
class Workload:
    """A side-by-side workload: its stacks, data, defaults and what it prints."""

    doc: str
    stacks: dict[str, Stack]
    data: tuple[str, ...]
    steps: int
    batch: int
    pools: Callable[[str], tuple[np.ndarray, np.ndarray]]
    title: Callable[[argparse.Namespace], str]
    goals: Callable[[dict[str, dict]], list[str]]
    score: str = "test NLL"
    lr: float = 1e-3
    options: Callable[[argparse.ArgumentParser], None] | None = None


def parser(workload: Workload) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=workload.doc.split("\n")[0])
    p.add_argument("--steps", type=int, default=workload.steps, help="training steps per stack")
    p.add_argument("--data", nargs="+", default=[workload.data[0]], choices=workload.data)
    stacks = list(workload.stacks)
    p.add_argument("--stacks", nargs="+", default=stacks, choices=stacks)
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the PyTorch stacks (default: torch's own; "
        "on a machine busy with other work 1 avoids OpenMP oversubscription)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every stack's initialisation and step noise (data and batches fixed); "
        "rerun with several seeds to see how much the test score moves",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None,
        help="run every stack once per seed and add a table of the test scores' mean and "
        "standard error over seeds (and the median ms/step)",
    )
    p.add_argument(
        "--compile-cache", metavar="DIR", default=None,
        help="JAX's persistent compilation cache for the JAX stacks "
        "(jflows.training.compile_cache.enable_compilation_cache); default: off",
    )
    if workload.options is not None:
        workload.options(p)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--pools", default=None, help=argparse.SUPPRESS)
    p.add_argument("--make-pools", default=None, help=argparse.SUPPRESS)
    return p


def worker(workload: Workload, args: argparse.Namespace) -> None:
    """Child process: runs one stack on one data set and writes its result as JSON."""
    stack = workload.stacks[args.worker]
    if args.compile_cache and stack.runner == "jax":
        from jflows.training.compile_cache import enable_compilation_cache

        enable_compilation_cache(args.compile_cache)
    try:
        if args.pools:  # prepared by the parent: this process imports only its own library
            with np.load(args.pools) as pools:
                train, test = pools["train"], pools["test"]
        else:
            train, test = workload.pools(args.data[0])
        idx = common.index_table(len(train), args.steps, workload.batch)
        task = Task(args.data[0], args.steps, args.seed, workload.lr, train, test, idx, args)
        runner = importlib.import_module(f"benchmarks.harness.{stack.runner}_runner")
        result = runner.run(stack.build, task)
        result["rss_end_mb"] = common.rss_mb()
        other = {"jax": "torch", "torch": "jax"}[stack.runner]
        result["foreign_library"] = other if other in sys.modules else None
    except ModuleNotFoundError as err:
        result = missing_peer(err)
    with open(args.result, "w") as f:
        json.dump(result, f)


def missing_peer(err: ModuleNotFoundError) -> dict:
    """The result of a stack whose peer library is not installed; re-raises any other import."""
    if (err.name or "").split(".")[0] not in PEERS:
        raise err
    return dict(status="missing", error=str(err))


def save_pools(workload: Workload, data: str, path: str) -> None:
    """Writes ``workload.pools(data)`` to the ``.npz`` file ``path`` (keys train, test)."""
    np.savez(path, **dict(zip(("train", "test"), workload.pools(data), strict=True)))


def make_pools(data: str, directory: str, command: list[str] | None = None) -> str:
    """The path of a ``.npz`` of the pools of ``data``, written by a child process.

    Not by this process: a child's peak RSS (``ru_maxrss``) starts from the RSS of the process
    that started it (Linux carries it over the ``exec``), and building digits' pools imports
    jflows, JAX and scikit-learn, which every stack would then show as its floor.
    """
    path = os.path.join(directory, f"pools_{data}.npz")
    cmd = [*(command or _command()), "--make-pools", path, "--data", data]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"building the pools of {data!r} failed:\n{proc.stderr[-3000:]}")
    return path


def _command() -> list[str]:
    """How to start this workload again: ``python -m MODULE`` (or the script's path)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None and spec.name:
        return [sys.executable, "-m", spec.name]
    return [sys.executable, os.path.abspath(sys.argv[0])]


def run_stacks(args: argparse.Namespace, data: str, pools: str) -> dict[str, dict]:
    """Runs each requested stack in its own process, one after another.

    The child gets this process's command line with ``--worker STACK --data DATA`` appended
    (the last ``--data`` wins), so a workload's own options reach it unchanged, and
    ``--pools FILE``, the ``.npz`` of :func:`make_pools`.
    """
    results = {}
    for stack in args.stacks:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            argv = getattr(args, "child_argv", sys.argv[1:])
            cmd = [*_command(), *argv, "--worker", stack, "--data", data, "--pools", pools]
            start = time.perf_counter()
            proc = subprocess.run([*cmd, "--result", out], capture_output=True, text=True, cwd=ROOT)
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
        if results[stack].get("foreign_library"):
            print(f"  [{data}] {stack}: its process also imported "
                  f"{results[stack]['foreign_library']}, which its peak RSS includes", flush=True)
    return results


def main(workload: Workload) -> None:
    """The workload's command: header, then per data set one table and the goal lines."""
    args = parser(workload).parse_args()
    if args.make_pools:
        save_pools(workload, args.data[0], args.make_pools)
        return
    if args.worker:
        worker(workload, args)
        return
    print(report.machine_header())
    labels = {name: s.label for name, s in workload.stacks.items() if s.label}
    seeds = args.seeds or [args.seed]
    with tempfile.TemporaryDirectory() as pools_dir:
        for data in args.data:
            _run_data_set(workload, args, data, make_pools(data, pools_dir), labels, seeds)


def _run_data_set(workload: Workload, args: argparse.Namespace, data: str, pools: str,
                  labels: dict[str, str], seeds: list[int]) -> None:
    """One data set: a table per seed, then (several seeds) the table over seeds."""
    per_seed = []
    for seed in seeds:
        args.seed = seed
        print(workload.title(args))
        results = run_stacks(_with_seed(args, seed), data, pools)
        per_seed.append(results)
        print(f"\n{data}, seed {seed}")
        report.print_table(*report.standard_rows(results, labels, workload.score))
        for line in workload.goals(results):
            print(line)
    if len(seeds) > 1:
        print(f"\n{data}: over seeds {seeds}")
        report.print_table(*report.seed_rows(per_seed, labels, workload.score))
        for line in workload.goals(report.seed_means(per_seed)):
            print(line)


def _with_seed(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """``args`` for one seed: the child processes get ``--seed seed`` (``--seeds`` dropped)."""
    argv = []
    skip = False
    for token in sys.argv[1:]:
        if token == "--seeds":
            skip = True
            continue
        if skip and not token.startswith("--"):
            continue
        skip = False
        argv.append(token)
    args.child_argv = [*argv, "--seed", str(seed)]
    return args
