"""W3: Glow on sklearn's 8x8 digits, jflows against normflows' MultiscaleFlow.

    python benchmarks/w3_glow_digits.py --steps 1000 [--stacks jflows]

2 levels x 4 steps, 64 hidden channels, affine coupling (sigmoid scale), LU 1x1 convolution,
ActNorm with data-dependent initialisation on the first batch, learned priors; fixed split
1500/297, uniform dequantization ``y = (k + u)/17``, batch 64, Adam 1e-3. Test bits/dim
``-log p(y)/(64 ln 2) + log2(17)`` averaged over the same 8 fixed dequantization draws per test
image for both stacks. Goal: jflows >= 2x faster than normflows, bits/dim no worse.
"""

from __future__ import annotations

import math
import os
import time

import common as C
import numpy as np

LEVELS, STEPS_PER_LEVEL, HIDDEN, LR = 2, 4, 64, 1e-3
STACKS = ("jflows", "normflows")
LOG2_LEVELS = math.log2(C.DIGITS_LEVELS)


def _setup(steps: int):
    train, test = C.digits_pools()
    return train, C.dequant_draws(test), C.index_table(len(train), steps, C.BATCH_DIGITS)


def run_jflows(data: str, steps: int) -> dict:
    import jax
    import optax

    from jflows import models as jm
    from jflows.training import create_train_state, evaluate_nll, make_eval_step, make_train_step

    train, draws, idx = _setup(steps)  # train: uint8 levels; draws: k + u in level units
    keys = C.step_keys(steps)
    start = time.perf_counter()
    flow = jm.glow(
        (8, 8, 1),
        levels=LEVELS,
        steps=STEPS_PER_LEVEL,
        hidden=HIDDEN,
        preprocessing=jm.image_preprocessing(C.DIGITS_LEVELS),
    )
    opt = optax.adam(LR)
    state = create_train_state(flow, opt, train[idx[0]], jax.random.key(C.SEED), dequantize=True)
    step = make_train_step(flow, opt, dequantize=True)
    setup_s = time.perf_counter() - start

    def one(i):
        nonlocal state
        state, metrics = step(state, train[idx[i]], keys[i])
        return float(metrics["loss"]) / (C.DIGITS_DIMS * math.log(2.0))  # bits/dim

    times, losses = C.train_loop(one, steps)
    res = C.summary(
        times,
        losses,
        setup_s=setup_s,
        params=C.count_params(state.params),
        nonfinite_steps=int(state.nonfinite_steps),
    )
    eval_step = make_eval_step(flow)  # the draws are already dequantized
    nll = [np.mean(evaluate_nll(eval_step, state, d, len(d))) for d in draws]
    res["test"] = float(np.mean(nll)) / (C.DIGITS_DIMS * math.log(2.0))
    return res


def run_normflows(data: str, steps: int) -> dict:
    import normflows as nf
    import torch

    torch.manual_seed(C.SEED)
    train, draws, idx = _setup(steps)
    train = np.ascontiguousarray(train.transpose(0, 3, 1, 2), np.float32)  # NCHW levels
    draws = np.ascontiguousarray(draws.transpose(0, 1, 4, 2, 3)) / C.DIGITS_LEVELS
    start = time.perf_counter()
    shape, q0, merges, flows = (1, 8, 8), [], [], []
    for i in range(LEVELS):  # normflows' Glow example with L=2, K=4, unconditional
        channels = shape[0] * 2 ** (LEVELS + 1 - i)
        flows.append(
            [
                nf.flows.GlowBlock(channels, HIDDEN, split_mode="channel", scale=True)
                for _ in range(STEPS_PER_LEVEL)
            ]
            + [nf.flows.Squeeze()]
        )
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (
                shape[0] * 2 ** (LEVELS - i),
                shape[1] // 2 ** (LEVELS - i),
                shape[2] // 2 ** (LEVELS - i),
            )
        else:
            latent = (shape[0] * 2 ** (LEVELS + 1), shape[1] // 2**LEVELS, shape[2] // 2**LEVELS)
        q0.append(nf.distributions.DiagGaussian(latent))
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    setup_s = time.perf_counter() - start
    bpd = lambda nll: nll / (C.DIGITS_DIMS * math.log(2.0)) + LOG2_LEVELS  # noqa: E731

    def one(i):
        k = torch.from_numpy(train[idx[i]])
        x = (k + torch.rand_like(k)) / C.DIGITS_LEVELS
        opt.zero_grad()
        loss = model.forward_kld(x)
        if torch.isfinite(loss):
            loss.backward()
            opt.step()
        return bpd(loss.item())

    times, losses = C.train_loop(one, steps)
    res = C.summary(
        times,
        losses,
        setup_s=setup_s,
        params=sum(p.numel() for p in model.parameters()),
        torch_threads=torch.get_num_threads(),
    )
    model.eval()
    with torch.no_grad():
        nll = [float(-model.log_prob(torch.from_numpy(d), None).mean()) for d in draws]
    res["test"] = bpd(float(np.mean(nll)))
    return res


def main() -> None:
    args = C.parser(__doc__, 1000, ("digits",), STACKS).parse_args()
    if args.worker:
        C.worker({"jflows": run_jflows, "normflows": run_normflows}, args)
        return
    print(C.machine_header())
    print(
        f"W3 glow-digits: {LEVELS} levels x {STEPS_PER_LEVEL} steps, {HIDDEN} channels, batch "
        f"{C.BATCH_DIGITS}, {args.steps} steps; median over steps {C.WARMUP + 1}-{args.steps};"
        f" seed {args.seed}; train loss and test in bits/dim"
    )
    results = C.run_stacks(os.path.abspath(__file__), args, "digits")
    print("\ndigits")
    C.print_table(*C.standard_rows(results, {}, "test bits/dim"))
    print(C.goal_line("normflows / jflows ms/step", C.speedup(results, "normflows"), 2.0))
    jf, nf_ = results.get("jflows", {}), results.get("normflows", {})
    if jf.get("status") == nf_.get("status") == "ok":
        diff = jf["test"] - nf_["test"]
        print(
            f"  jflows - normflows test bits/dim: {diff:+.3f} (goal <= 0: "
            f"{'met' if diff <= 0 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
