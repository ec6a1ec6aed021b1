"""W1 from the same weights: jflows and normflows compute the same thing and train alike.

    python benchmarks/w1_same_weights.py [--data moons] [--seed 0] [--steps 300]
        [--logdet roulette|exact] [--start shared|normflows]

Both start from ``w1_resflow2d.shared_init(seed)`` or, with ``--start normflows``, from the
weights normflows draws itself under ``torch.manual_seed(seed)`` (the W1 model: 10 blocks, MLP
2-128-128-2, LipSwish, c = 0.97, last layer /1000, Adam 1e-3, batch 500), so any difference is
the implementation's:

1. loss and parameter gradients of one batch with the exact 2x2 log-det (jflows
   ``logdet="exact"``, normflows ``brute_force=True``; stored power-iteration vectors, no
   refresh): the largest difference relative to the largest entry, per kind of parameter;
2. training in lockstep on the same batches (each library's own step: jflows' jitted step
   with its spectral-norm refresh inside, normflows' step then ``update_lipschitz``), the
   largest relative difference of the weights every ``steps / 10`` steps and the test NLL of
   both at the end. ``--logdet roulette`` (the default) trains with the W1 estimator (2 exact
   terms + Geometric(0.5), Neumann gradients) and hands normflows the very probes and
   roulette lengths jflows drew (recorded with ``jax.debug.callback`` and fed to normflows by
   replacing ``torch.randn_like`` and its ``geometric_sample``: a benchmark-only patch);
   ``--logdet exact`` trains both with the exact log-det, so nothing random is involved.

Chaos amplifies float32 rounding (Adam's first steps divide tiny gradients by their own
size), so the weights drift apart slowly. ``--seed 1`` (300 steps): weights within 0.3 % and
test NLL 2.7186 vs 2.7187 (roulette), within 0.4 % and 2.7167 vs 2.7166 (exact). The exact
lockstep comparison over 2000 steps from normflows' own seed-0 initial weights (``--start
normflows --logdet exact --steps 2000``) ends at test NLL 1.8184 (jflows) and 1.7933
(normflows), where jflows from its own seed-0 weights ends at 2.134 (``w1_resflow2d.py --init
own``, roulette): at 2000 steps the moons NLL depends far more on the initial weights than on
the library.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.harness import common as C
from benchmarks.harness.report import machine_header
from benchmarks.workloads import w1_resflow2d as W1

KINDS = ("w", "b", "beta")


def jflows_blocks(tree) -> list[list[dict[str, np.ndarray]]]:
    """A jflows parameter (or gradient) tree as ``shared_init``'s per-block list."""
    from flax import traverse_util

    flat = {path[-1]: np.asarray(v) for path, v in traverse_util.flatten_dict(tree).items()}
    blocks = []
    for b in range(W1.N_BLOCKS):
        layers = []
        for i in range(len(W1.DIMS) - 1):
            w = flat[f"kernel_{i}"][b]
            narrowing = W1.DIMS[i + 1] < W1.DIMS[i]
            layers.append(
                dict(w=w if narrowing else w.T, b=flat[f"bias_{i}"][b], beta=flat[f"beta_{i}"][b])
            )
        blocks.append(layers)
    return blocks


def normflows_blocks(
    flows, grads: bool = False, vectors: bool = False
) -> list[list[dict[str, np.ndarray]]]:
    """The weights of normflows' blocks (or their ``.grad``) in the order the data meets them.

    ``vectors`` adds each layer's power-iteration vectors ``u``, ``v`` (``shared_init``'s format).
    """

    def get(p):
        return (p.grad if grads else p).detach().numpy().copy()

    blocks = []
    for b in range(len(flows)):
        net = flows[len(flows) - 1 - b].iresblock.nnet.net
        blocks.append(
            [
                dict(
                    w=get(net[2 * i + 1].weight),
                    b=get(net[2 * i + 1].bias),
                    beta=get(net[2 * i].beta).reshape(()),
                )
                for i in range(len(W1.DIMS) - 1)
            ]
        )
        if vectors:
            for i, layer in enumerate(blocks[-1]):
                layer.update(u=net[2 * i + 1].u.numpy().copy(), v=net[2 * i + 1].v.numpy().copy())
    return blocks


def relative_differences(a, b) -> dict[str, float]:
    """``max|a - b| / max|b|`` per parameter kind, over all blocks and layers."""
    out = {}
    for kind in KINDS:
        for i in range(len(W1.DIMS) - 1):
            x = np.stack([blk[i][kind] for blk in a])
            y = np.stack([blk[i][kind] for blk in b])
            out[f"{kind}{i}"] = float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30))
    return out


class DrawRecorder:
    """Records the probes and roulette lengths jflows draws and replays them in normflows.

    jflows' draws (``sample_probe``, ``draw_n_terms`` in ``jflows.kernels.logdet_series``) are
    wrapped to report each value with an ordered ``jax.debug.callback``; normflows' residual
    blocks draw a length with ``geometric_sample`` and then a probe with ``torch.randn_like``,
    block by block in the order the data meets them, which is the order jflows' scan draws in.
    """

    def __init__(self):
        self.recorded, self.queue, self.last_lengths = [], [], []

    def wrap(self, fn, kind):
        import jax

        def wrapped(*args, **kwargs):
            value = fn(*args, **kwargs)
            jax.debug.callback(
                lambda a: self.recorded.append((kind, np.asarray(a))), value, ordered=True
            )
            return value

        return wrapped

    def hand_to_normflows(self, n_blocks: int) -> None:
        probes = [a for kind, a in self.recorded if kind == "probe"]
        lengths = [int(a) for kind, a in self.recorded if kind == "length"]
        if len(probes) != n_blocks or len(lengths) != n_blocks:
            raise SystemExit(
                f"expected {n_blocks} draws of each kind, got {len(probes)}, {len(lengths)}"
            )
        for n, v in zip(lengths, probes):
            self.queue += [("length", n), ("probe", v)]
        self.recorded.clear()
        self.last_lengths = lengths

    def next(self, kind):
        got, value = self.queue.pop(0)
        if got != kind:
            raise SystemExit(f"normflows asked for a {kind}, the next recorded draw is a {got}")
        return value


def record_jflows_draws() -> DrawRecorder:
    """Installs the recorder (before any jflows step is traced) and normflows' replay."""
    import normflows as nf
    import torch

    import jflows.kernels.logdet_series as series

    rec = DrawRecorder()
    series.sample_probe = rec.wrap(series.sample_probe, "probe")
    series.draw_n_terms = rec.wrap(series.draw_n_terms, "length")
    exact_terms = W1.N_EXACT
    nf.flows.residual.geometric_sample = lambda p, m: np.array([rec.next("length") - exact_terms])
    torch.randn_like = lambda x: torch.from_numpy(rec.next("probe").copy())
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="moons", choices=("moons", "8gaussians"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--logdet", default="roulette", choices=("roulette", "exact"))
    p.add_argument(
        "--start",
        default="shared",
        choices=("shared", "normflows"),
        help="initial weights: w1_resflow2d.shared_init(seed), or normflows' own (torch seed)",
    )
    args = p.parse_args()
    roulette = args.logdet == "roulette"

    import jax
    import jax.numpy as jnp
    import normflows as nf
    import optax
    import torch

    from jflows.names import LIPSCHITZ, PARAMS
    from jflows.training import create_train_state, evaluate_nll, make_eval_step, make_train_step

    print(machine_header())
    print(f"W1 from seed {args.seed}'s {args.start} initial weights, {args.data}\n")
    draws = record_jflows_draws() if roulette else None
    torch.manual_seed(args.seed)
    train, test = C.toy_pools(args.data)
    idx = C.index_table(len(train), args.steps + 1, C.BATCH_2D)
    flows = W1.normflows_blocks(brute_force=True)  # drawn from torch's seeded generator
    if args.start == "shared":
        blocks = W1.shared_init(args.seed)
        W1.load_into_normflows(flows, blocks)
    else:  # normflows' own initial weights, copied into jflows
        blocks = normflows_blocks(flows, vectors=True)

    flow = W1.jflows_flow(logdet="exact")
    train_flow = W1.jflows_flow() if roulette else flow
    eval_flow = W1.jflows_flow(training=False)
    opt = optax.adam(W1.LR)
    state = create_train_state(flow, opt, train[idx[0]], jax.random.key(args.seed))
    state = W1.load_into_jflows(state, blocks, opt)

    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)
    model.train()
    torch_opt = torch.optim.Adam(model.parameters(), lr=W1.LR)

    # 1. one batch, same weights: loss and gradients
    x = train[idx[0]]

    def loss_fn(params):
        variables = {PARAMS: params, LIPSCHITZ: state.collections[LIPSCHITZ]}
        return -jnp.mean(flow.apply(variables, jnp.asarray(x), method="log_prob"))

    loss_j, grads_j = jax.value_and_grad(loss_fn)(state.params)
    loss_t = model.forward_kld(torch.from_numpy(x))
    loss_t.backward()
    print(f"1. loss of one batch: jflows {float(loss_j):.7f}, normflows {loss_t.item():.7f}")
    diffs = relative_differences(jflows_blocks(grads_j), normflows_blocks(flows, grads=True))
    print(
        "   gradients, max |difference| / max |normflows|: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
    )

    # 2. lockstep training
    what = "the same probes and roulette lengths" if roulette else "the exact log-det"
    print(f"\n2. {args.steps} steps in lockstep on the same batches, {what}")
    print(f"{'step':>6s} {'weights rel. diff':>18s}  roulette lengths of the 10 blocks")
    for f in flows:
        f.iresblock.brute_force = not roulette
    step = make_train_step(train_flow, opt)
    keys = C.step_keys(args.steps)
    every = max(1, args.steps // 10)
    start = time.perf_counter()
    for i in range(args.steps):
        batch = train[idx[i]]
        state, _ = step(state, batch, keys[i])
        if roulette:
            jax.effects_barrier()
            draws.hand_to_normflows(W1.N_BLOCKS)
        torch_opt.zero_grad()
        model.forward_kld(torch.from_numpy(batch)).backward()
        torch_opt.step()
        nf.utils.update_lipschitz(model, 5)
        if (i + 1) % every == 0 or i == 0:
            d = relative_differences(jflows_blocks(state.params), normflows_blocks(flows))
            lengths = draws.last_lengths if roulette else "-"
            print(f"{i + 1:6d} {max(d.values()):18.1e}  {lengths}", flush=True)
    nll_j = float(np.mean(evaluate_nll(make_eval_step(eval_flow), state, test, C.N_TEST)))
    model.eval()
    nll_t = float(-model.log_prob(torch.from_numpy(test)).detach().mean())
    print(
        f"\ntest NLL after {args.steps} steps: jflows {nll_j:.4f}, normflows {nll_t:.4f} "
        f"({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
