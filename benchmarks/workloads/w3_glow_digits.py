"""W3: Glow on sklearn's 8x8 digits, jflows against normflows' MultiscaleFlow.

    python -m benchmarks.workloads.w3_glow_digits --steps 1000 [--stacks jflows]

2 levels x 4 steps, 64 hidden channels, affine coupling (sigmoid scale), LU 1x1 convolution,
ActNorm with data-dependent initialisation on the first batch, learned priors; fixed split
1500/297, uniform dequantization ``y = (k + u)/17``, batch 64, Adam 1e-3. Test bits/dim
(``jflows.data.bits_per_dim`` of the NLL in level units, i.e. ``-log p(y)/(64 ln 2) +
log2(17)``) averaged over the same 8 fixed dequantization draws per test image for both stacks.
Goal: jflows >= 2x faster than normflows, bits/dim no worse.
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import common as C
from benchmarks.harness import report
from benchmarks.harness.workload import Stack, Task, Workload, main

LEVELS, STEPS_PER_LEVEL, HIDDEN = 2, 4, 64


def pools(data: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 training levels ``(1500, 8, 8, 1)``; test: 8 fixed draws ``k + u``, level units."""
    train, test = C.digits_pools()
    return train, C.dequant_draws(test)


def jflows_flow(training: bool = True, preprocessing=None):
    """The W3 Glow of jflows (``jflows.models.glow``), reading integer levels.

    ``preprocessing`` defaults to ``image_preprocessing(17)`` (uniform dequantization first);
    ``training`` is accepted for the workloads' common interface (a Glow is the same model in
    training and evaluation).
    """
    from jflows import models as jm

    if preprocessing is None:
        preprocessing = jm.image_preprocessing(C.DIGITS_LEVELS)
    return jm.glow(
        (8, 8, 1), levels=LEVELS, steps=STEPS_PER_LEVEL, hidden=HIDDEN,
        preprocessing=preprocessing,
    )


def build_jflows(task: Task):
    """The Glow of jflows, tested on the fixed draws ``k + u`` that normflows is tested on.

    ``digits_draws_model``: the test flow reads the draws in place of its dequantizer.
    """
    from benchmarks.harness.jax_runner import digits_draws_model

    return digits_draws_model(task, lambda prep, _: jflows_flow(preprocessing=prep), C.bits_per_dim)


def build_normflows(task: Task):
    import normflows as nf
    import torch

    from benchmarks.harness.torch_runner import TorchModel

    train = np.ascontiguousarray(task.train.transpose(0, 3, 1, 2), np.float32)  # NCHW levels
    draws = np.ascontiguousarray(task.test.transpose(0, 1, 4, 2, 3)) / C.DIGITS_LEVELS
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

    def test(model) -> float:  # normflows models y = x / 17: its NLL moved to level units
        with torch.no_grad():
            nll = [float(-model.log_prob(torch.from_numpy(d), None).mean()) for d in draws]
        return C.bits_per_dim(C.nll_in_levels(float(np.mean(nll))))

    return TorchModel(
        model=model,
        test=test,
        pool=train,
        batch=lambda k: (k + torch.rand_like(k)) / C.DIGITS_LEVELS,
        loss_to=lambda nll: C.bits_per_dim(C.nll_in_levels(nll)),
    )


def goals(results: dict[str, dict]) -> list[str]:
    lines = [
        report.goal_line("normflows / jflows ms/step", report.speedup(results, "normflows"), 2.0)
    ]
    jf, nf_ = results.get("jflows", {}), results.get("normflows", {})
    if jf.get("status") == nf_.get("status") == "ok":
        diff = jf["test"] - nf_["test"]
        lines.append(
            f"  jflows - normflows test bits/dim: {diff:+.3f} (goal <= 0: "
            f"{'met' if diff <= 0 else 'NOT met'})"
        )
    return lines


WORKLOAD = Workload(
    doc=__doc__,
    stacks={"jflows": Stack(build_jflows, "jax"), "normflows": Stack(build_normflows, "torch")},
    data=("digits",),
    steps=1000,
    batch=C.BATCH_DIGITS,
    pools=pools,
    title=lambda args: (
        f"W3 glow-digits: {LEVELS} levels x {STEPS_PER_LEVEL} steps, {HIDDEN} channels, batch "
        f"{C.BATCH_DIGITS}, {args.steps} steps; median over steps {C.WARMUP + 1}-{args.steps};"
        f" seed {args.seed}; train loss and test in bits/dim"
    ),
    goals=goals,
    score="test bits/dim",
)

if __name__ == "__main__":
    main(WORKLOAD)
