"""W6: spline coupling (NSF) and masked autoregressive (MAF) flows vs flowjax and normflows.

    python -m benchmarks.workloads.w6_spline_maf --flow nsf --data checkerboard 6d --seeds 0 1 2 3 4
    python -m benchmarks.workloads.w6_spline_maf --flow maf --data 8gaussians 6d --seeds 0 1 2 3 4

Same protocol as W2 (Adam 1e-3, batch 500, 2000 steps, fixed batches, test NLL in nats over
5000 points). Data: ``8gaussians``, ``checkerboard``, ``moons`` (2-D) and ``6d`` (a 6-D density
with curved, heteroscedastic and heavy-tailed dependencies, ``harness.common.six_d``).

``--flow nsf``: 8 rational-quadratic spline couplings (8 bins on [-4, 4], identity tails),
one ReLU MLP conditioner (hidden 128-128) per coupling, halves alternating (flowjax: its own
permutation between layers). jflows ``models.nsf``; flowjax ``coupling_flow`` with
``RationalQuadraticSpline(knots=8, interval=4)``; normflows ``CoupledRationalQuadraticSpline``
(its conditioner is a residual net of 2 blocks of width 128, not a plain MLP).

``--flow maf``: 8 masked affine autoregressive layers (MADE, ReLU, hidden 128-128), order
reversed between layers; density direction in one pass. jflows ``models.maf``; flowjax
``masked_autoregressive_flow``; normflows ``MaskedAffineAutoregressive`` with ``Permute``.

Every library initialises its own way (the test NLL is compared over seeds). Goals: jflows
>= 1.2x faster per step than flowjax, and its mean test NLL over seeds no worse than
flowjax's by more than one standard error.
"""

from __future__ import annotations

from benchmarks.harness import common as C
from benchmarks.harness import report
from benchmarks.harness.workload import Stack, Task, Workload, main

N_LAYERS, HIDDEN, BINS, BOUND = 8, (128, 128), 8, 4.0


def build_jflows(task: Task):
    from benchmarks.harness.jax_runner import jflows_model
    from jflows import models as jm

    d = task.train.shape[1]
    if task.args.flow == "nsf":
        flow = jm.nsf((d,), n_couplings=N_LAYERS, hidden=HIDDEN, num_bins=BINS, bound=BOUND)
    else:
        flow = jm.maf((d,), n_layers=N_LAYERS, hidden=HIDDEN, transform="affine")
    return jflows_model(task, flow)


def build_flowjax(task: Task):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow
    from flowjax.train.losses import MaximumLikelihoodLoss
    from flowjax.train.train_utils import step

    from benchmarks.harness.jax_runner import JaxModel

    d = task.train.shape[1]
    common = dict(base_dist=Normal(jnp.zeros(d)), flow_layers=N_LAYERS, nn_width=HIDDEN[0],
                  nn_depth=len(HIDDEN), nn_activation=jax.nn.relu, invert=True)
    key = jax.random.key(task.seed)
    if task.args.flow == "nsf":
        spline = RationalQuadraticSpline(knots=BINS, interval=BOUND)
        flow = coupling_flow(key, transformer=spline, **common)
    else:
        flow = masked_autoregressive_flow(key, **common)
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    opt = optax.adam(task.lr)
    loss_fn = MaximumLikelihoodLoss()

    def train_step(state, x, key):  # flowjax's own step (eqx.filter_jit)
        params, opt_state, loss = step(
            state[0], static, x, optimizer=opt, opt_state=state[1], loss_fn=loss_fn
        )
        return (params, opt_state), loss

    return JaxModel(
        state=(params, opt.init(params)),
        step=train_step,
        test=lambda state: float(loss_fn(state[0], static, task.test)),
        params=lambda state: state[0],
    )


def build_normflows(task: Task):
    import normflows as nf
    import torch

    from benchmarks.harness.torch_runner import TorchModel

    d = task.train.shape[1]
    flows = []
    for i in range(N_LAYERS):
        if task.args.flow == "nsf":
            flows.append(nf.flows.CoupledRationalQuadraticSpline(
                d, len(HIDDEN), HIDDEN[0], num_bins=BINS, tail_bound=BOUND,
                activation=torch.nn.ReLU, reverse_mask=i % 2 == 1))
        else:
            flows += [nf.flows.MaskedAffineAutoregressive(d, HIDDEN[0], num_blocks=len(HIDDEN)),
                      nf.flows.Permute(d, mode="swap")]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), flows)

    def test(model) -> float:
        with torch.no_grad():
            return float(-model.log_prob(torch.from_numpy(task.test)).mean())

    return TorchModel(model=model, test=test)


def goals(results: dict[str, dict]) -> list[str]:
    return [
        report.goal_line("flowjax / jflows ms/step", report.speedup(results, "flowjax"), 1.2),
        report.goal_line("normflows / jflows ms/step", report.speedup(results, "normflows"), 1.2),
    ]


def options(parser) -> None:
    parser.add_argument("--flow", choices=("nsf", "maf"), default="nsf",
                        help="spline coupling flow (nsf) or masked autoregressive flow (maf)")


WORKLOAD = Workload(
    doc=__doc__,
    stacks={
        "jflows": Stack(build_jflows, "jax"),
        "flowjax": Stack(build_flowjax, "jax"),
        "normflows": Stack(build_normflows, "torch"),
    },
    data=("checkerboard", "8gaussians", "moons", "6d"),
    steps=2000,
    batch=C.BATCH_2D,
    pools=C.toy_pools,
    title=lambda args: (
        f"W6 {args.flow}: {N_LAYERS} layers, MLP hidden {HIDDEN}"
        f"{f', {BINS} bins on [-{BOUND:g}, {BOUND:g}]' if args.flow == 'nsf' else ''}, batch "
        f"{C.BATCH_2D}, {args.steps} steps; median over steps {C.WARMUP + 1}-{args.steps}; "
        f"seed {args.seed}"
    ),
    goals=goals,
    options=options,
)

if __name__ == "__main__":
    main(WORKLOAD)
