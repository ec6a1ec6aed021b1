"""W2: 2-D RealNVP training step, jflows against flowjax, distrax+flax, normflows and a floor.

    python -m benchmarks.workloads.w2_realnvp2d --data moons --steps 2000 [--stacks jflows floor]

8 affine couplings alternating which coordinate is transformed, one ReLU MLP conditioner
(hidden 128-128, last layer zero) per coupling giving (t, s), ``exp`` scale, base N(0, I)
fixed, Adam 1e-3, batch 500; test NLL in nats over 5000 points. The floor is a bare jitted
forward+backward of 8 residual MLPs 2-128-128-2 (no coupling, no optimizer), timed the same way.
Goals: jflows >= 1.15x faster than the faster of flowjax and distrax+flax, >= 1.5x faster
than normflows, and within 1.2x of the floor.
"""

from __future__ import annotations

import math

from benchmarks.harness import common as C
from benchmarks.harness import report
from benchmarks.harness.workload import Stack, Task, Workload, main

N_LAYERS, HIDDEN = 8, (128, 128)


def jflows_flow():
    """The W2 RealNVP of jflows (``jflows.models.realnvp``)."""
    from jflows import models as jm

    return jm.realnvp((2,), n_couplings=N_LAYERS, hidden=HIDDEN, scale_map="exp")


def build_jflows(task: Task):
    from benchmarks.harness.jax_runner import jflows_model

    return jflows_model(task, jflows_flow())


def flowjax_flow(seed: int):
    """The W2 RealNVP of flowjax: ``coupling_flow`` with exp-scale affine, last layers zero."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import paramax
    from flowjax.bijections import Affine
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow

    exp_affine = eqx.tree_at(
        lambda a: a.scale, Affine(), replace=paramax.Parameterize(jnp.exp, jnp.zeros(()))
    )
    flow = coupling_flow(
        jax.random.key(seed),
        base_dist=Normal(jnp.zeros(2)),
        transformer=exp_affine,
        flow_layers=N_LAYERS,
        nn_width=HIDDEN[0],
        nn_depth=len(HIDDEN),
        nn_activation=jax.nn.relu,
        invert=True,
    )
    last = lambda f: f.bijection.bijection.bijection.bijections[0].conditioner.layers[-1]  # noqa: E731
    flow = eqx.tree_at(lambda f: (last(f).weight, last(f).bias), flow, replace_fn=jnp.zeros_like)
    return eqx.tree_at(lambda f: f.base_dist, flow, replace_fn=paramax.non_trainable)


def build_flowjax(task: Task):
    import equinox as eqx
    import optax
    import paramax
    from flowjax.train.losses import MaximumLikelihoodLoss
    from flowjax.train.train_utils import step

    from benchmarks.harness.jax_runner import JaxModel

    flow = flowjax_flow(task.seed)
    params, static = eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
    )
    opt = optax.adam(task.lr)
    loss_fn = MaximumLikelihoodLoss()

    def train_step(state, x, key):  # flowjax's own step (eqx.filter_jit); no key needed
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


def distrax_realnvp():
    """The W2 RealNVP in distrax+flax: a linen module whose ``__call__`` is ``log_prob``."""
    import distrax
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    def torch_init(fan_in):  # U(+-1/sqrt(fan_in)) for weights and biases, as torch.nn.Linear
        bound = 1.0 / math.sqrt(fan_in)
        return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
            key, shape, dtype, -bound, bound
        )

    class Conditioner(nn.Module):
        @nn.compact
        def __call__(self, x):
            for width in HIDDEN:
                init = torch_init(x.shape[-1])
                x = nn.relu(nn.Dense(width, kernel_init=init, bias_init=init)(x))
            return nn.Dense(2, kernel_init=nn.initializers.zeros)(x)  # (shift, log_scale)

    def affine(out):
        return distrax.ScalarAffine(shift=out[..., :1], log_scale=out[..., 1:])

    class RealNVP(nn.Module):
        def setup(self):
            self.nets = [Conditioner() for _ in range(N_LAYERS)]

        def __call__(self, x):
            layers = [
                distrax.MaskedCoupling(
                    mask=jnp.arange(2) == i % 2, conditioner=net, bijector=affine
                )
                for i, net in enumerate(self.nets)
            ]
            base = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
            return distrax.Transformed(base, distrax.Chain(layers)).log_prob(x)

    return RealNVP()


def build_distrax(task: Task):
    import jax
    import jax.numpy as jnp
    import optax

    from benchmarks.harness.jax_runner import JaxModel

    model, opt = distrax_realnvp(), optax.adam(task.lr)
    params = jax.jit(model.init)(jax.random.key(task.seed), task.train[task.idx[0]])

    @jax.jit
    def step(state, x, key):
        params, opt_state = state
        loss, grads = jax.value_and_grad(lambda p: -jnp.mean(model.apply(p, x)))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return JaxModel(
        state=(params, opt.init(params)),
        step=step,
        test=lambda state: float(-jnp.mean(jax.jit(model.apply)(state[0], task.test))),
        params=lambda state: state[0],
    )


def normflows_flow():
    """The W2 RealNVP of normflows (``AffineCouplingBlock``s, last layers zero)."""
    import normflows as nf

    flows = [
        nf.flows.AffineCouplingBlock(
            nf.nets.MLP([1, *HIDDEN, 2], init_zeros=True),
            scale_map="exp",
            split_mode="channel" if i % 2 == 0 else "channel_inv",
        )
        for i in range(N_LAYERS)
    ]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)


def build_normflows(task: Task):
    import torch

    from benchmarks.harness.torch_runner import TorchModel

    model = normflows_flow()

    def test(model) -> float:
        with torch.no_grad():
            return float(-model.log_prob(torch.from_numpy(task.test)).mean())

    return TorchModel(model=model, test=test)


def build_floor(task: Task):
    """A bare jitted forward+backward of 8 residual MLPs 2-128-128-2 (no optimiser)."""
    import jax
    import jax.numpy as jnp

    from benchmarks.harness.jax_runner import JaxModel

    dims = (2, *HIDDEN, 2)
    params, key = [], jax.random.key(task.seed)
    for _ in range(N_LAYERS):
        mlp = []
        for i in range(len(dims) - 1):
            key, kw, kb = jax.random.split(key, 3)
            bound = 1.0 / math.sqrt(dims[i])
            mlp.append(
                (
                    jax.random.uniform(kw, (dims[i], dims[i + 1]), minval=-bound, maxval=bound),
                    jax.random.uniform(kb, (dims[i + 1],), minval=-bound, maxval=bound),
                )
            )
        params.append(mlp)

    def loss_fn(params, x):
        for mlp in params:
            h = x
            for j, (w, b) in enumerate(mlp):
                h = h @ w + b
                h = jax.nn.relu(h) if j < len(mlp) - 1 else h
            x = x + h
        return jnp.sum(x)

    fwd_bwd = jax.jit(jax.value_and_grad(loss_fn))

    def step(params, x, key):
        loss, _ = fwd_bwd(params, x)
        return params, loss

    return JaxModel(state=params, step=step, test=lambda params: None, is_loss=False)


def goals(results: dict[str, dict]) -> list[str]:
    speedup = report.speedup
    jax_peers = [s for s in ("flowjax", "distrax") if speedup(results, s) is not None]
    best = min(jax_peers, key=lambda s: results[s]["median_ms"]) if jax_peers else None
    floor = speedup(results, "floor")
    return [
        report.goal_line(
            f"faster JAX peer{f' ({best})' if best else ''} / jflows ms/step",
            speedup(results, best) if best else None,
            1.15,
        ),
        report.goal_line("normflows / jflows ms/step", speedup(results, "normflows"), 1.5),
        report.goal_line(
            "jflows / floor ms/step", 1.0 / floor if floor else None, 1.2, higher_is_better=False
        ),
    ]


WORKLOAD = Workload(
    doc=__doc__,
    stacks={
        "jflows": Stack(build_jflows, "jax"),
        "flowjax": Stack(build_flowjax, "jax"),
        "distrax": Stack(build_distrax, "jax", "distrax+flax (torch-like init)"),
        "normflows": Stack(build_normflows, "torch"),
        "floor": Stack(build_floor, "jax", "floor (fwd+bwd of 8 MLPs)"),
    },
    data=("moons", "8gaussians"),
    steps=2000,
    batch=C.BATCH_2D,
    pools=C.toy_pools,
    title=lambda args: (
        f"W2 realnvp-2d: {N_LAYERS} couplings, MLP hidden {HIDDEN}, batch {C.BATCH_2D}, "
        f"{args.steps} steps; median over steps {C.WARMUP + 1}-{args.steps}; seed {args.seed}"
    ),
    goals=goals,
)

if __name__ == "__main__":
    main(WORKLOAD)
