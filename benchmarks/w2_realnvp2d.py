"""W2: 2-D RealNVP training step, jflows against flowjax, distrax+flax, normflows and a floor.

    python benchmarks/w2_realnvp2d.py --data moons --steps 2000 [--stacks jflows floor]

8 affine couplings alternating which coordinate is transformed, one ReLU MLP conditioner
(hidden 128-128, last layer zero) per coupling giving (t, s), ``exp`` scale, base N(0, I)
fixed, Adam 1e-3, batch 500; test NLL in nats over 5000 points. The floor is a bare jitted
forward+backward of 8 residual MLPs 2-128-128-2 (no coupling, no optimizer), timed the same way.
Goals: jflows >= 1.15x faster than the faster of flowjax and distrax+flax, >= 1.5x faster
than normflows, and within 1.2x of the floor.
"""

from __future__ import annotations

import math
import os
import time

import common as C
import numpy as np

N_LAYERS, HIDDEN, LR = 8, (128, 128), 1e-3
STACKS = ("jflows", "flowjax", "distrax", "normflows", "floor")
LABELS = {"distrax": "distrax+flax (torch-like init)", "floor": "floor (fwd+bwd of 8 MLPs)"}


def _setup(data: str, steps: int):
    train, test = C.toy_pools(data)
    return train, test, C.index_table(len(train), steps, C.BATCH_2D)


def run_jflows(data: str, steps: int) -> dict:
    import jax
    import optax

    from jflows import models as jm
    from jflows.training import create_train_state, evaluate_nll, make_eval_step, make_train_step

    train, test, idx = _setup(data, steps)
    keys = C.step_keys(steps)
    start = time.perf_counter()
    flow = jm.realnvp((2,), n_couplings=N_LAYERS, hidden=HIDDEN, scale_map="exp")
    opt = optax.adam(LR)
    state = create_train_state(flow, opt, train[idx[0]], jax.random.key(C.SEED))
    step = make_train_step(flow, opt)
    setup_s = time.perf_counter() - start

    def one(i):
        nonlocal state
        state, metrics = step(state, train[idx[i]], keys[i])
        return float(metrics["loss"])

    times, losses = C.train_loop(one, steps)
    res = C.summary(times, losses, setup_s=setup_s, params=C.count_params(state.params))
    res["test"] = float(np.mean(evaluate_nll(make_eval_step(flow), state, test, C.N_TEST)))
    return res


def run_flowjax(data: str, steps: int) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax
    import paramax
    from flowjax.bijections import Affine
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow
    from flowjax.train.losses import MaximumLikelihoodLoss
    from flowjax.train.train_utils import step

    train, test, idx = _setup(data, steps)
    start = time.perf_counter()
    exp_affine = eqx.tree_at(
        lambda a: a.scale, Affine(), replace=paramax.Parameterize(jnp.exp, jnp.zeros(()))
    )
    flow = coupling_flow(
        jax.random.key(C.SEED),
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
    flow = eqx.tree_at(lambda f: f.base_dist, flow, replace_fn=paramax.non_trainable)
    params, static = eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
    )
    opt = optax.adam(LR)
    opt_state, loss_fn = opt.init(params), MaximumLikelihoodLoss()
    setup_s = time.perf_counter() - start

    def one(i):
        nonlocal params, opt_state
        params, opt_state, loss = step(
            params, static, train[idx[i]], optimizer=opt, opt_state=opt_state, loss_fn=loss_fn
        )
        return float(loss)

    times, losses = C.train_loop(one, steps)
    res = C.summary(times, losses, setup_s=setup_s, params=C.count_params(params))
    res["test"] = float(loss_fn(params, static, test))
    return res


def run_distrax(data: str, steps: int) -> dict:
    import distrax
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

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

    train, test, idx = _setup(data, steps)
    start = time.perf_counter()
    model, opt = RealNVP(), optax.adam(LR)
    params = jax.jit(model.init)(jax.random.key(C.SEED), train[idx[0]])
    opt_state = opt.init(params)
    setup_s = time.perf_counter() - start

    @jax.jit
    def step(params, opt_state, x):
        loss, grads = jax.value_and_grad(lambda p: -jnp.mean(model.apply(p, x)))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def one(i):
        nonlocal params, opt_state
        params, opt_state, loss = step(params, opt_state, train[idx[i]])
        return float(loss)

    times, losses = C.train_loop(one, steps)
    res = C.summary(times, losses, setup_s=setup_s, params=C.count_params(params))
    res["test"] = float(-jnp.mean(jax.jit(model.apply)(params, test)))
    return res


def run_normflows(data: str, steps: int) -> dict:
    import normflows as nf
    import torch

    torch.manual_seed(C.SEED)
    train, test, idx = _setup(data, steps)
    start = time.perf_counter()
    flows = [
        nf.flows.AffineCouplingBlock(
            nf.nets.MLP([1, *HIDDEN, 2], init_zeros=True),
            scale_map="exp",
            split_mode="channel" if i % 2 == 0 else "channel_inv",
        )
        for i in range(N_LAYERS)
    ]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    setup_s = time.perf_counter() - start

    def one(i):
        x = torch.from_numpy(train[idx[i]])
        opt.zero_grad()
        loss = model.forward_kld(x)
        if torch.isfinite(loss):
            loss.backward()
            opt.step()
        return loss.item()

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
        res["test"] = float(-model.log_prob(torch.from_numpy(test)).mean())
    return res


def run_floor(data: str, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    train, _, idx = _setup(data, steps)
    start = time.perf_counter()
    dims = (2, *HIDDEN, 2)
    params, key = [], jax.random.key(C.SEED)
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
    setup_s = time.perf_counter() - start

    def one(i):
        loss, _ = fwd_bwd(params, train[idx[i]])
        return float(loss)

    times, losses = C.train_loop(one, steps)
    res = C.summary(times, losses, setup_s=setup_s, params=C.count_params(params))
    return {**res, "test": None, "loss_end": None}


def main() -> None:
    args = C.parser(__doc__, 2000, ("moons", "8gaussians"), STACKS).parse_args()
    if args.worker:
        C.worker(
            {
                "jflows": run_jflows,
                "flowjax": run_flowjax,
                "distrax": run_distrax,
                "normflows": run_normflows,
                "floor": run_floor,
            },
            args,
        )
        return
    print(C.machine_header())
    print(
        f"W2 realnvp-2d: {N_LAYERS} couplings, MLP hidden {HIDDEN}, batch {C.BATCH_2D}, "
        f"{args.steps} steps; median over steps {C.WARMUP + 1}-{args.steps}; seed {args.seed}"
    )
    for data in args.data:
        results = C.run_stacks(os.path.abspath(__file__), args, data)
        print(f"\n{data}")
        C.print_table(*C.standard_rows(results, LABELS, "test NLL"))
        jax_peers = [s for s in ("flowjax", "distrax") if C.speedup(results, s) is not None]
        best = min(jax_peers, key=lambda s: results[s]["median_ms"]) if jax_peers else None
        print(
            C.goal_line(
                f"faster JAX peer ({best}) / jflows ms/step",
                C.speedup(results, best) if best else None,
                1.15,
            )
        )
        print(C.goal_line("normflows / jflows ms/step", C.speedup(results, "normflows"), 1.5))
        floor = C.speedup(results, "floor")
        print(
            C.goal_line(
                "jflows / floor ms/step",
                1.0 / floor if floor else None,
                1.2,
                higher_is_better=False,
            )
        )


if __name__ == "__main__":
    main()
