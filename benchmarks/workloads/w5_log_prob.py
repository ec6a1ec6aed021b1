"""W5: batched log-likelihood throughput, jflows against normflows, flowjax and distrax+flax.

    python -m benchmarks.workloads.w5_log_prob [--points 200000] [--models realnvp resflow glow]

``log_prob`` of ``--points`` points (default 200 000) in fixed batches, jitted for the JAX
stacks, under ``torch.no_grad()`` in eval mode for normflows, for three models:

- ``realnvp``: the W2 RealNVP (8 exp-scale affine couplings, MLP 128-128) on moons points
  (the 100 000-point pool repeated), batch 10 000; peers normflows, flowjax, distrax+flax;
  and a floor, not a peer: the eight conditioner MLPs alone (``floor_realnvp``), whose
  process also times a bare matrix product of the MLPs' largest shape (``matmul_gflops``);
  the goal line then gives the GFLOP/s each stack's MLPs reach and the rate the goal needs.
- ``resflow``: the W1 Residual Flow in evaluation mode (10 blocks, exact 2x2 log-det:
  ``jflows_flow(training=False)``; normflows' ``Residual`` blocks in eval mode use their
  brute-force 2x2 determinant), batch 10 000; peer normflows. Both stacks get the same
  weights (W1's ``shared_init``), so their log-densities agree (column "mean log p").
- ``glow``: the W3 Glow (2 levels x 4 steps, 64 channels) on one fixed dequantization of the
  digits test set repeated to size, batch 2 000; peer normflows (which scores ``y = x / 17``:
  its log-densities differ from jflows' by ``64 ln 17`` and by its own random weights).

The models are not trained. So that no flow is the identity (zero-initialised last layers),
every stack's parameters get Gaussian noise of std ``NOISE`` added after initialisation
(RealNVP, Glow); the Residual Flow's last layers take PyTorch's initial law without W1's
division by 1000. Each stack runs in its own process. Reported per stack: the first call
(one batch: trace and compile for JAX, the first batch for torch), then points per second
over whole passes (results on the host), median over ``--repeats`` passes after one warm-up
pass. torch runs with ``torch.get_num_threads()`` threads (its default: the cores; set with
``--torch-threads``); JAX uses XLA:CPU's default thread pool. Goal: jflows >= 2x the best
peer's points per second for each model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

from benchmarks.harness import common as C
from benchmarks.harness import report
from benchmarks.harness.workload import ROOT, _command, missing_peer

NOISE = 0.05
BATCH = {"realnvp": 10_000, "resflow": 10_000, "glow": 2_000}
STACKS = {
    "realnvp": ("jflows", "flowjax", "distrax", "normflows", "floor"),
    "resflow": ("jflows", "normflows"),
    "glow": ("jflows", "normflows"),
}


# ---------------------------------------------------------------- data and noise


def points(model: str, n: int) -> np.ndarray:
    """``n`` float32 points: moons rows (2-D models) or digits test images in level units."""
    if model == "glow":
        _, test = C.digits_pools()
        pool = C.dequant_draws(test, 1)[0]
    else:
        pool = C.toy_pools("moons")[0]
    return np.ascontiguousarray(np.resize(pool, (n, *pool.shape[1:])), np.float32)


def jax_noise(tree, seed: int):
    """Every inexact leaf of ``tree`` plus N(0, NOISE^2) noise (one jitted call)."""
    import jax

    def add(tree):
        leaves, treedef = jax.tree.flatten(tree)
        keys = jax.random.split(jax.random.key(1000 + seed), len(leaves))
        noisy = [
            leaf + NOISE * jax.random.normal(k, leaf.shape, leaf.dtype)
            if hasattr(leaf, "dtype") and np.issubdtype(leaf.dtype, np.floating) else leaf
            for leaf, k in zip(leaves, keys)
        ]
        return jax.tree.unflatten(treedef, noisy)

    return jax.jit(add)(tree)


def torch_noise(model, seed: int) -> None:
    """Every parameter of ``model`` plus N(0, NOISE^2) noise (torch's generator seeded)."""
    import torch

    torch.manual_seed(1000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(NOISE * torch.randn_like(p))


# ---------------------------------------------------------------- scorers
# Each returns ``score(x) -> np.ndarray``: log p of every row of the host array x.


def jax_batches(fn, batch: int):
    """``score(x)``: ``fn(batch)`` over fixed batches (last one padded), fetched once."""
    from jflows.models.evaluate import stream_rows

    return lambda x: stream_rows(lambda rows, b: fn(rows), x, batch)


def jit_init(flow, seed: int, x: np.ndarray) -> dict:
    """``flow.init`` on ``x`` under ``jit`` (eager initialisation of a Glow takes minutes)."""
    import jax

    return jax.jit(flow.init, static_argnames="method")(jax.random.key(seed), x,
                                                         method="log_prob")


def jflows_realnvp(batch: int, seed: int):

    import jflows
    from benchmarks.workloads.w2_realnvp2d import jflows_flow

    flow = jflows_flow()
    variables = jit_init(flow, seed, points("realnvp", 500))
    variables = {**variables, "params": jax_noise(variables["params"], seed)}
    return lambda x: jflows.evaluate_log_prob(flow, variables, x, batch_size=batch)


def jflows_resflow(batch: int, seed: int):
    import jax
    import optax

    import jflows
    from benchmarks.workloads import w1_resflow2d as w1
    from jflows.training import create_train_state

    flow = w1.jflows_flow(training=False)
    state = create_train_state(flow, optax.sgd(0.0), points("resflow", 500), jax.random.key(seed))
    state = w1.load_into_jflows(state, resflow_weights(seed), optax.sgd(0.0))
    variables = state.variables()
    return lambda x: jflows.evaluate_log_prob(flow, variables, x, batch_size=batch)


def jflows_glow(batch: int, seed: int):

    import jflows
    from benchmarks.workloads import w3_glow_digits as w3
    from jflows import models as jm
    from jflows.bijectors import FixedAffine

    prep = [FixedAffine(scale=1.0, event_ndims=3), *jm.image_preprocessing(C.DIGITS_LEVELS)[1:]]
    flow = jm.glow((8, 8, 1), levels=w3.LEVELS, steps=w3.STEPS_PER_LEVEL, hidden=w3.HIDDEN,
                   preprocessing=prep)  # W3's test flow: reads the fixed draws k + u
    variables = jit_init(flow, seed, points("glow", 500))
    variables = {**variables, "params": jax_noise(variables["params"], seed)}
    return lambda x: jflows.evaluate_log_prob(flow, variables, x, batch_size=batch)


def flowjax_realnvp(batch: int, seed: int):
    import equinox as eqx
    import paramax

    from benchmarks.workloads.w2_realnvp2d import flowjax_flow

    is_leaf = lambda leaf: isinstance(leaf, paramax.NonTrainable)  # noqa: E731
    params, static = eqx.partition(flowjax_flow(seed), eqx.is_inexact_array, is_leaf=is_leaf)
    flow = eqx.combine(jax_noise(params, seed), static, is_leaf=is_leaf)
    log_prob = eqx.filter_jit(lambda flow, x: flow.log_prob(x))
    return jax_batches(lambda x: log_prob(flow, x), batch)


def distrax_realnvp(batch: int, seed: int):
    import jax

    from benchmarks.workloads.w2_realnvp2d import distrax_realnvp as module

    model = module()
    params = jax_noise(jax.jit(model.init)(jax.random.key(seed), points("realnvp", 500)), seed)
    log_prob = jax.jit(model.apply)
    return jax_batches(lambda x: log_prob(params, x), batch)


def floor_realnvp(batch: int, seed: int):
    """Not a flow: the W2 RealNVP's eight conditioner MLPs 1-128-128-2 alone, jitted.

    Each MLP reads one coordinate and its (t, s) are summed into a scalar per point, so XLA
    cannot drop any of them; no coupling, no log-det bookkeeping, no base density. What any
    JAX RealNVP of this shape costs at least on this machine (its matrix products).
    """
    import jax
    import jax.numpy as jnp

    from benchmarks.workloads.w2_realnvp2d import HIDDEN, N_LAYERS

    sizes = (1, *HIDDEN, 2)
    keys = iter(jax.random.split(jax.random.key(seed), N_LAYERS * len(sizes)))
    mlps = [[(jax.random.normal(next(keys), (a, b)) / np.sqrt(a), jnp.zeros(b))
             for a, b in zip(sizes[:-1], sizes[1:], strict=True)] for _ in range(N_LAYERS)]

    @jax.jit
    def score(x):
        total = jnp.zeros(x.shape[0])
        for i, mlp in enumerate(mlps):
            h = x[:, i % 2 : i % 2 + 1]
            for j, (w, b) in enumerate(mlp):
                h = h @ w + b
                h = jax.nn.relu(h) if j < len(mlp) - 1 else h
            total = total + h.sum(-1)
        return total

    return jax_batches(score, batch)


def realnvp_flops_per_point() -> int:
    """Floating-point operations of the W2 RealNVP's eight MLPs 1-128-128-2 on one point.

    Two per multiply-add of the three matrix products; biases, ReLUs and the couplings'
    own arithmetic left out, so this undercounts the flow.
    """
    from benchmarks.workloads.w2_realnvp2d import HIDDEN, N_LAYERS

    sizes = (1, *HIDDEN, 2)
    return 2 * N_LAYERS * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def matmul_gflops(batch: int, width: int = 128, chain: int = 16, repeats: int = 20) -> float:
    """Best GFLOP/s of ``chain`` chained ``(batch, width) @ (width, width)`` float32 products.

    The rate XLA:CPU reaches on the RealNVP's largest matrix product, with nothing else in
    the program: an upper bound on the rate of its MLPs (median of ``repeats`` calls).
    """
    import jax
    import jax.numpy as jnp

    key_h, key_w = jax.random.split(jax.random.key(0))
    h = jax.random.normal(key_h, (batch, width), jnp.float32)
    w = jax.random.normal(key_w, (width, width), jnp.float32) / np.sqrt(width)

    @jax.jit
    def products(h, w):
        for _ in range(chain):
            h = h @ w
        return h

    products(h, w).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        products(h, w).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * batch * width * width * chain / float(np.median(times)) / 1e9


def torch_batches(model, batch: int, prepare=lambda x: x):
    """``score(x)`` of a normflows model in eval mode under ``torch.no_grad()``."""
    import torch

    model.eval()

    def score(x):
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch):
                out.append(model.log_prob(prepare(torch.from_numpy(x[start:start + batch]))))
        return torch.cat(out).numpy()

    return score


def normflows_realnvp(batch: int, seed: int):
    from benchmarks.workloads.w2_realnvp2d import normflows_flow

    model = normflows_flow()
    torch_noise(model, seed)
    return torch_batches(model, batch)


def resflow_weights(seed: int):
    """W1's shared initial weights with the last layers at PyTorch's law (not divided by 1000)."""
    from benchmarks.workloads.w1_resflow2d import shared_init

    blocks = shared_init(seed)
    for layers in blocks:
        layers[-1]["w"] = layers[-1]["w"] * np.float32(1000.0)  # same singular vectors u, v
    return blocks


def normflows_resflow(batch: int, seed: int):
    import normflows as nf

    from benchmarks.workloads import w1_resflow2d as w1

    flows = w1.normflows_blocks()
    w1.load_into_normflows(flows, resflow_weights(seed))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)
    return torch_batches(model, batch)


def normflows_glow(batch: int, seed: int):
    import torch

    from benchmarks.workloads.w3_glow_digits import build_normflows

    train, _ = C.digits_pools()
    task = types.SimpleNamespace(train=train[:500], test=points("glow", 1)[None])
    model = build_normflows(task).model
    first = points("glow", 500).transpose(0, 3, 1, 2) / C.DIGITS_LEVELS
    with torch.no_grad():  # ActNorm's data-dependent initialisation, as in training
        model.log_prob(torch.from_numpy(np.ascontiguousarray(first)), None)
    torch_noise(model, seed)
    score = torch_batches(
        types.SimpleNamespace(eval=model.eval, log_prob=lambda y: model.log_prob(y, None)),
        batch,
        prepare=lambda x: x.permute(0, 3, 1, 2).contiguous() / C.DIGITS_LEVELS,
    )
    return score


BUILDERS = {
    ("realnvp", "jflows"): jflows_realnvp,
    ("realnvp", "flowjax"): flowjax_realnvp,
    ("realnvp", "distrax"): distrax_realnvp,
    ("realnvp", "normflows"): normflows_realnvp,
    ("realnvp", "floor"): floor_realnvp,
    ("resflow", "jflows"): jflows_resflow,
    ("resflow", "normflows"): normflows_resflow,
    ("glow", "jflows"): jflows_glow,
    ("glow", "normflows"): normflows_glow,
}


# ---------------------------------------------------------------- measuring


def measure(model: str, stack: str, args) -> dict:
    """Builds one stack's scorer, times its first call and ``args.repeats`` whole passes."""
    if stack == "normflows":
        import torch

        torch.manual_seed(args.seed)  # the models' own initialisation
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
    batch = min(args.batch or BATCH[model], args.points)
    x = points(model, args.points)
    start = time.perf_counter()
    score = BUILDERS[model, stack](batch, args.seed)
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    first = score(x[:batch])
    first_s = time.perf_counter() - start
    score(x)  # warm-up pass
    passes = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = score(x)
        passes.append(time.perf_counter() - start)
    if out.shape != (len(x),) or not np.all(np.isfinite(out)):
        raise SystemExit(f"{model}/{stack}: log p of shape {out.shape}, finite: "
                         f"{bool(np.all(np.isfinite(out)))}")
    result = dict(status="ok", batch=batch, setup_s=setup_s, first_s=first_s, passes_s=passes,
                  points_per_s=len(x) / float(np.median(passes)),
                  mean_log_prob=float(np.mean(first)), rss_mb=C.rss_mb())
    if stack == "normflows":
        import torch

        result["torch_threads"] = torch.get_num_threads()
    if stack == "floor":
        result["matmul_gflops"] = matmul_gflops(batch)
    return result


def worker(args) -> None:
    model, stack = args.worker.split(":")
    try:
        result = measure(model, stack, args)
    except ModuleNotFoundError as err:
        result = missing_peer(err)
    with open(args.result, "w") as f:
        json.dump(result, f)


def run_stack(model: str, stack: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [*_command(), *sys.argv[1:], "--worker", f"{model}:{stack}", "--result", out]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode == 0 and os.path.exists(out):
            with open(out) as f:
                return json.load(f)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return dict(status="failed", error=" | ".join(tail))


def rows(results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["stack", "points/s", "p. pass s (min-max)", "first call s", "setup s",
               "batch", "peak RSS MB", "mean log p (1st batch)"]
    out = []
    for stack, r in results.items():
        label = stack + (f" ({r['torch_threads']} torch thr.)" if r.get("torch_threads") else "")
        if r["status"] == "missing":
            out.append([label, report.NOT_INSTALLED] + [""] * 6)
        elif r["status"] != "ok":
            out.append([label, f"failed: {r.get('error', '')[:150]}"] + [""] * 6)
        else:
            p = r["passes_s"]
            out.append([label, f"{r['points_per_s']:,.0f}",
                        f"{np.median(p):.3f} ({min(p):.3f}-{max(p):.3f})",
                        f"{r['first_s']:.2f}", f"{r['setup_s']:.2f}", str(r["batch"]),
                        f"{r['rss_mb']:.0f}", f"{r['mean_log_prob']:.3f}"])
    return headers, out


def goal(model: str, results: dict[str, dict]) -> str:
    jf = results.get("jflows", {})
    peers = {s: r for s, r in results.items()
             if s not in ("jflows", "floor") and r.get("status") == "ok"}
    if jf.get("status") != "ok" or not peers:
        return report.goal_line(f"{model}: jflows / best peer points/s", None, 2.0)
    best = max(peers, key=lambda s: peers[s]["points_per_s"])
    ratio = jf["points_per_s"] / peers[best]["points_per_s"]
    line = report.goal_line(f"{model}: jflows / best peer ({best}) points/s", ratio, 2.0)
    floor = results.get("floor", {})
    if floor.get("status") == "ok":
        line += (f"\n  {model}: jflows / floor (its MLPs alone) points/s: "
                 f"{jf['points_per_s'] / floor['points_per_s']:.2f}; best peer / floor: "
                 f"{peers[best]['points_per_s'] / floor['points_per_s']:.2f}")
    if model == "realnvp" and floor.get("matmul_gflops"):
        flops = realnvp_flops_per_point()
        need = 2.0 * peers[best]["points_per_s"]
        line += (f"\n  {model}: its MLPs are {flops:,} FLOP per point; jflows runs them at "
                 f"{jf['points_per_s'] * flops / 1e9:.0f} GFLOP/s, the best peer at "
                 f"{peers[best]['points_per_s'] * flops / 1e9:.0f}; 2x the best peer "
                 f"({need:,.0f} points/s) needs {need * flops / 1e9:.0f} GFLOP/s, and a bare "
                 f"({floor['batch']}, 128) @ (128, 128) product runs at "
                 f"{floor['matmul_gflops']:.0f} GFLOP/s here")
    return line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=200_000, help="points scored per pass")
    p.add_argument("--models", nargs="+", default=list(STACKS), choices=list(STACKS))
    p.add_argument("--stacks", nargs="+", default=None,
                   help="a subset of jflows normflows flowjax distrax (default: all that apply)")
    p.add_argument("--batch", type=int, default=None,
                   help=f"rows per call for every model (default: {BATCH})")
    p.add_argument("--repeats", type=int, default=5, help="timed passes after the warm-up")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and their noise")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads for normflows (default: torch's own)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.worker:
        worker(args)
        return
    print(report.machine_header())
    print(f"command: python -m benchmarks.workloads.w5_log_prob {' '.join(sys.argv[1:])}")
    lines = []
    for model in args.models:
        stacks = [s for s in STACKS[model] if args.stacks is None or s in args.stacks]
        print(f"\nW5 {model}: log_prob of {args.points:,} points, batch "
              f"{min(args.batch or BATCH[model], args.points):,}, median of {args.repeats} "
              f"passes after a warm-up pass; seed {args.seed}", flush=True)
        results = {}
        for stack in stacks:
            results[stack] = run_stack(model, stack)
            print(f"  [{model}] {stack}: {results[stack]['status']}", flush=True)
        report.print_table(*rows(results))
        lines.append(goal(model, results))
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
