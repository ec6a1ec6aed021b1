"""W4: an image Residual Flow on sklearn's 8x8 digits, jflows against normflows' Residual.

    python -m benchmarks.workloads.w4_resflow_digits --steps 1000 [--stacks jflows] [--seeds 0 1 2]

Model (both stacks): uniform dequantization ``x = k + u`` of the levels ``k`` (0..16), scaling
``y = x / 17``, logit ``z = logit(0.05 + 0.9 y)``, one squeeze to 4x4x4, ActNorm, then 8 x
(residual block, ActNorm), un-squeezed back to 8x8x1 (a permutation), base N(0, I). Each block is
``x + g(x)`` with ``g`` = LipSwish -> 3x3 conv (4 -> 32) -> LipSwish -> 1x1 conv (32 -> 32) ->
LipSwish -> 3x3 conv (32 -> 4), every convolution divided by ``max(1, sigma / 0.98)`` with
``sigma`` the spectral norm of the convolution operator on 4x4 inputs (power iteration, stored
vectors, 5 iterations per step), the last convolution initialised /1000. Training log-det:
Russian roulette with 2 exact terms + Geometric(0.5) terms, one Gaussian probe, Neumann-series
gradients (normflows: ``reduce_memory=True``, its backward-in-forward estimator). Batch 64,
Adam 1e-3, 1000 steps, fixed split 1500/297.

Test bits/dim (``jflows.data.bits_per_dim`` of the NLL in level units) averaged over the same 8
fixed dequantization draws per test image for both stacks (as W3). Both stacks score in the
same way: spectral-norm vectors refreshed with 100 power iterations for the trained weights
(jflows' evaluation model does it inside its evaluation step and discards them; normflows gets
``update_lipschitz(model, 100)`` first), then per block the unbiased estimate with 20 exact
terms plus a Geometric(0.5) roulette tail and one Gaussian probe, values only. That is
normflows' ``iResBlock`` in eval mode (``basic_logdet_estimator`` with ``n_power_series =
N + 20``, coefficients ``1 / P(N >= k - 20)``, one draw of ``N`` per call) and jflows'
``training=False`` model for events of more than 16 scalars
(``residual_builder.estimator_settings``: 20 exact terms + the training tail, one draw per
call). Both estimates are unbiased; over 297 x 8 evaluations their noise is far below the
differences between seeds.

"train loss end" is an NLL estimate (bits/dim) for jflows, but for normflows the value of its
Neumann-gradient surrogate (``reduce_memory=True`` returns the surrogate, not the series
estimate), so only the test column compares the two.

Initial weights: ``--init shared`` (default) draws every convolution's kernel and bias
(PyTorch's law ``U(+-1/sqrt(fan_in))``, the last /1000), LipSwish ``beta`` = 0.5 and the
power-iteration vectors (the exact top singular pair of each convolution operator, from an SVD
of its matrix) once per seed with numpy and loads them into both stacks (kernels OIHW in torch,
HWIO in jflows; vectors CHW vs HWC). Not shared: the ActNorm parameters, which both libraries
initialise from the first training batch (the same 64 images, each library's own dequantization
noise), and the step noise (dequantization, roulette lengths, probes). Differences that remain:
jflows normalises with a margin (``1.001 sigma / c``) and refreshes the vectors inside the step
before using them; normflows uses the stored vectors and refreshes after the step
(``update_lipschitz(model, 5)``, counted in its step time, as W1 does).

Goals (issue 17): normflows / jflows ms/step >= 2.5; jflows' mean test bits/dim over seeds no
worse than normflows' by more than one standard error (of the difference of the two means,
``sqrt(se_jflows^2 + se_normflows^2)``; with one seed +0.01 stands in for it); jflows' peak RSS
of training no higher than normflows'.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.harness import common as C
from benchmarks.harness import report
from benchmarks.harness.workload import Stack, Task, Workload, main

N_BLOCKS, HIDDEN, KERNELS, COEFF = 8, 32, (3, 1, 3), 0.98
N_EXACT, GEOM_P, ALPHA, POWER_ITERATIONS, EVAL_POWER_ITERATIONS = 2, 0.5, 0.05, 5, 100
SQUEEZED = (4, 4, 4)  # (H, W, C) after the squeeze
ONE_SEED_SLACK = 0.01  # bits/dim; the one-seed stand-in for "one standard error"


def pools(data: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 training levels ``(1500, 8, 8, 1)``; test: 8 fixed draws ``k + u``, level units."""
    train, test = C.digits_pools()
    return train, C.dequant_draws(test)


# ------------------------------------------------------------------ shared initial weights


def conv_matrix(w: np.ndarray, h: int, wd: int) -> np.ndarray:
    """The matrix of a stride-1 "SAME" convolution (kernel OIHW) on ``(C_in, h, wd)`` inputs.

    Rows and columns are flattened CHW (``(C_out h wd, C_in h wd)``), PyTorch's order.
    """
    c_out, c_in, k, _ = w.shape
    pad = k // 2
    m = np.zeros((c_out, h, wd, c_in, h, wd))
    for y in range(h):
        for x in range(wd):
            for dy in range(k):
                for dx in range(k):
                    yy, xx = y + dy - pad, x + dx - pad
                    if 0 <= yy < h and 0 <= xx < wd:
                        m[:, y, x, :, yy, xx] = w[:, :, dy, dx]
    return m.reshape(c_out * h * wd, c_in * h * wd)


def shared_init(seed: int) -> list[list[dict[str, np.ndarray]]]:
    """Initial weights of every block (in the order the data meets them) and convolution.

    Per layer: ``w`` (OIHW) and ``b`` from ``U(+-1/sqrt(C_in k^2))`` (the last ``w`` / 1000),
    LipSwish ``beta`` = 0.5 (before softplus), and the top singular pair of the convolution
    operator on 4x4 inputs: ``u`` and ``v`` flattened CHW for 3x3 layers, ``(C,)`` for 1x1.
    """
    rng = np.random.default_rng([seed, 4])
    h, wd, c = SQUEEZED
    chans = [c, *([HIDDEN] * (len(KERNELS) - 1)), c]
    blocks = []
    for _ in range(N_BLOCKS):
        layers = []
        for i, k in enumerate(KERNELS):
            bound = 1.0 / math.sqrt(chans[i] * k * k)
            w = rng.uniform(-bound, bound, (chans[i + 1], chans[i], k, k))
            w = w / (1000.0 if i == len(KERNELS) - 1 else 1.0)
            b = rng.uniform(-bound, bound, chans[i + 1])
            m = w[:, :, 0, 0] if k == 1 else conv_matrix(w, h, wd)
            v = np.linalg.svd(m)[2][0]
            u = m @ v / np.linalg.norm(m @ v)
            f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
            layers.append(dict(w=f32(w), b=f32(b), beta=f32(0.5), u=f32(u), v=f32(v)))
        blocks.append(layers)
    return blocks


def load_into_jflows(state, blocks, optimizer):
    """``state`` with the ``shared_init`` weights (stacked over blocks) and a fresh Adam state."""
    from benchmarks.harness.jax_runner import load_shared_weights

    h, wd, _ = SQUEEZED

    def hwc(vec, i):  # CHW-flattened -> (H, W, C); 1x1 layers keep (C,)
        return vec if KERNELS[i] == 1 else vec.reshape(-1, h, wd).transpose(1, 2, 0)

    values = {}
    for i in range(len(KERNELS)):
        stack = lambda key: np.stack([blk[i][key] for blk in blocks])  # noqa: E731,B023
        values[(f"kernel_{i}",)] = stack("w").transpose(0, 3, 4, 2, 1)  # OIHW -> HWIO
        values[(f"bias_{i}",)] = stack("b")
        values[(f"beta_{i}",)] = stack("beta")
        for name in ("u", "v"):
            values[(f"layer_{i}", name)] = np.stack([hwc(blk[i][name], i) for blk in blocks])

    # ActNorm has no entry: each library initialises it from the first batch
    return load_shared_weights(state, values, optimizer, skip_missing=True)


def load_into_normflows(residuals, blocks) -> None:
    """Copies the ``shared_init`` weights into normflows' ``Residual`` flows.

    ``residuals`` are in the order the data meets them. Every ``InducedNormConv2d`` gets its
    kernel, bias, vectors, its spatial size (4x4) and ``initialized = 1``, so it does not draw
    its own vectors on the first call.
    """
    import torch

    h, wd, _ = SQUEEZED
    with torch.no_grad():
        for res, layers in zip(residuals, blocks):
            net = res.iresblock.nnet.net  # [Swish, InducedNormConv2d] * 3
            for i, layer in enumerate(layers):
                swish, conv = net[2 * i], net[2 * i + 1]
                conv.weight.copy_(torch.from_numpy(layer["w"]))
                conv.bias.copy_(torch.from_numpy(layer["b"]))
                conv.u = torch.from_numpy(layer["u"].copy())
                conv.v = torch.from_numpy(layer["v"].copy())
                conv.spatial_dims.copy_(torch.tensor([float(h), float(wd)]))
                conv.initialized.fill_(1)
                swish.beta.fill_(float(layer["beta"]))


# ------------------------------------------------------------------ jflows


def jflows_flow(training: bool = True, preprocessing=None, unroll: int | bool = True):
    """The W4 flow of jflows, composed from library layers.

    ``unroll``: blocks per loop iteration of the training model's ``Stack`` (True: all, the
    workload's setting; ``benchmarks.investigations.w4_unroll`` measures the others).

    ``preprocessing`` defaults to ``image_preprocessing(17, logit_alpha=0.05)`` (uniform
    dequantization of the levels, scaling by 1/17, logit). ``training=False`` builds the
    evaluation model (20 exact terms + the roulette tail, 100 power iterations per refresh).
    """
    from jflows import models as jm
    from jflows.bijectors import ActNorm, Chain, Inverse, Squeeze, Stack
    from jflows.bijectors.lipschitz_nets import LipschitzCNN
    from jflows.bijectors.residual import ResidualBlock
    from jflows.models.common import assemble_flow
    from jflows.models.residual_builder import estimator_settings

    if preprocessing is None:
        preprocessing = jm.image_preprocessing(C.DIGITS_LEVELS, logit_alpha=ALPHA)
    settings = estimator_settings(
        math.prod(SQUEEZED),
        training=training,
        logdet="roulette",
        n_exact_terms=N_EXACT,
        tail="geometric",
        gradient="neumann",
        exact_max_dims=16,
    )

    def block():
        cnn = LipschitzCNN(
            hidden=HIDDEN,
            kernel_sizes=KERNELS,
            coeff=COEFF,
            power_iterations=POWER_ITERATIONS if training else EVAL_POWER_ITERATIONS,
            last_init_scale=1e-3,
            param_dtype="float32",
        )
        res = ResidualBlock(cnn, geom_p=GEOM_P, **settings)
        return Chain([res, ActNorm(event_ndims=3, param_dtype="float32")])

    layers = [
        Squeeze(),
        ActNorm(event_ndims=3, param_dtype="float32"),
        Stack(block, length=N_BLOCKS, unroll=unroll if training else 1),  # as resflow's
        Inverse(Squeeze()),
    ]
    return assemble_flow((8, 8, 1), layers, preprocessing, "standard", "float32")


def build_jflows(task: Task):
    """The W4 flow of jflows, tested on the fixed draws ``k + u`` (as W3's Glow).

    The test flow is the evaluation model, ``jflows_flow(training=False)``.
    """
    from benchmarks.harness.jax_runner import digits_draws_model

    def shared(state, opt):
        return load_into_jflows(state, shared_init(task.seed), opt)

    return digits_draws_model(
        task,
        lambda prep, training: jflows_flow(training=training, preprocessing=prep),
        C.bits_per_dim,
        init=shared if task.args.init == "shared" else None,
        logit_alpha=ALPHA,
    )


# ------------------------------------------------------------------ normflows


def build_normflows(task: Task):
    import normflows as nf
    import torch
    from normflows.transforms import Logit

    from benchmarks.harness.torch_runner import TorchModel

    train = np.ascontiguousarray(task.train.transpose(0, 3, 1, 2), np.float32)  # NCHW levels
    draws = np.ascontiguousarray(task.test.transpose(0, 1, 4, 2, 3)) / C.DIGITS_LEVELS
    h, wd, c = SQUEEZED
    residuals = [
        nf.flows.Residual(
            nf.nets.LipschitzCNN(
                [c, HIDDEN, HIDDEN, c],
                list(KERNELS),
                lipschitz_const=COEFF,
                max_lipschitz_iter=POWER_ITERATIONS,
                init_zeros=True,
            ),
            reverse=True,
            reduce_memory=True,
            geom_p=GEOM_P,
            n_exact_terms=N_EXACT,
            n_samples=1,
            n_dist="geometric",
        )
        for _ in range(N_BLOCKS)
    ]
    if task.args.init == "shared":
        load_into_normflows(residuals, shared_init(task.seed))
    # normflows lists flows from the latent side: the data meets the last one first
    data_order = [Logit(alpha=ALPHA), nf.flows.Squeeze(), nf.flows.ActNorm((c, 1, 1))]
    for res in residuals:
        data_order += [res, nf.flows.ActNorm((c, 1, 1))]
    model = nf.NormalizingFlow(
        nf.distributions.DiagGaussian((c, h, wd), trainable=False), data_order[::-1]
    )

    def test(model) -> float:  # normflows models y = x / 17: its NLL moved to level units
        nf.utils.update_lipschitz(model, EVAL_POWER_ITERATIONS)
        nll = []
        for d in draws:
            lp = model.log_prob(torch.from_numpy(np.ascontiguousarray(d, np.float32)))
            nll.append(float(-lp.detach().mean()))
        return C.bits_per_dim(C.nll_in_levels(float(np.mean(nll))))

    return TorchModel(
        model=model,
        test=test,
        pool=train,
        batch=lambda k: (k + torch.rand_like(k)) / C.DIGITS_LEVELS,
        after_step=lambda: nf.utils.update_lipschitz(model, POWER_ITERATIONS),
        loss_to=lambda nll: C.bits_per_dim(C.nll_in_levels(nll)),
    )


# ------------------------------------------------------------------ command


def options(p) -> None:
    p.add_argument(
        "--init",
        default="shared",
        choices=("shared", "own"),
        help="shared: both stacks start from the same numpy-drawn convolutions and spectral "
        "vectors (per --seed); own: each library draws its own",
    )


def goals(results: dict[str, dict]) -> list[str]:
    lines = [
        report.goal_line("normflows / jflows ms/step", report.speedup(results, "normflows"), 2.5)
    ]
    jf, nf_ = results.get("jflows", {}), results.get("normflows", {})
    if jf.get("status") == nf_.get("status") == "ok":
        if jf.get("test") is not None and nf_.get("test") is not None:
            diff = jf["test"] - nf_["test"]
            ses = (jf.get("test_se"), nf_.get("test_se"))
            se = None if None in ses else math.hypot(*ses)  # s.e. of the difference of means
            slack = ONE_SEED_SLACK if se is None else se
            what = "1 s.e. of the difference" if se is not None else f"{ONE_SEED_SLACK} (one seed)"
            lines.append(
                f"  jflows - normflows test bits/dim: {diff:+.4f} (goal <= {what} = "
                f"{slack:.4f}: {'met' if diff <= slack else 'NOT met'})"
            )
        if "rss_train_mb" in jf and "rss_train_mb" in nf_:
            lines.append(
                report.goal_line(
                    "jflows / normflows peak RSS",
                    jf["rss_train_mb"] / nf_["rss_train_mb"],
                    1.0,
                    higher_is_better=False,
                )
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
        f"W4 resflow-digits: squeeze to {'x'.join(map(str, SQUEEZED))}, {N_BLOCKS} blocks "
        f"(conv 3-1-3, {HIDDEN} channels), roulette {N_EXACT}+Geom({GEOM_P}), batch "
        f"{C.BATCH_DIGITS}, {args.steps} steps; median over steps {C.WARMUP + 1}-{args.steps};"
        f" seed {args.seed}; {args.init} initial weights; train loss and test in bits/dim"
    ),
    goals=goals,
    options=options,
    score="test bits/dim",
)

if __name__ == "__main__":
    main(WORKLOAD)
