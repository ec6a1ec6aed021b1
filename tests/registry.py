"""Registry of every bijector and model that goes through the contract suite.

Adding a bijector to the suite is one line in ``CASES``: a name, a zero-argument constructor,
and the event shape (plus optional data range and rngs).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax

from jflows import bijectors as jb
from jflows import models as jm

DT = "float64" if jax.config.jax_enable_x64 else "float32"
"""Models are built in the session's dtype: the float64 pass checks float64 models."""


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], object]
    event_shape: tuple[int, ...]
    # data are drawn as low + (high - low) * U[0,1) when ``uniform`` else N(loc, scale^2)
    uniform: tuple[float, float] | None = None
    loc: float = 0.5
    scale: float = 1.5
    # std of the noise added to every parameter after init, so zero-initialised layers are
    # not identities in the test
    perturb: float = 0.1
    rtol32: float = 2e-4
    exact_logdet: bool = True
    same_shape: bool = True
    # shape of one context for conditional cases (the suite passes a fixed context)
    context: tuple[int, ...] | None = None


V = (4,)
IMG = (4, 4, 2)
IMG1 = (8, 8, 1)
MLP8 = functools.partial(jb.MLP, (8,))
CNN4 = functools.partial(jb.ConvNet, 4)

CASES = [
    Case("actnorm_vector", lambda: jb.ActNorm(event_ndims=1), V),
    Case("actnorm_image", lambda: jb.ActNorm(event_ndims=3), IMG),
    Case("elementwise_affine", lambda: jb.ElementwiseAffine(event_ndims=1), V),
    Case("elementwise_affine_image_channel",
         lambda: jb.ElementwiseAffine(event_ndims=3, per_channel=True), IMG),
    Case("fixed_affine", lambda: jb.FixedAffine(shift=(1.0, -2.0, 0.5, 0.0),
                                                scale=(0.5, 2.0, -1.0, 3.0)), V),
    Case("logit", lambda: jb.Logit(alpha=0.05, event_ndims=3), IMG, uniform=(0.0, 1.0)),
    Case("reverse", lambda: jb.Reverse(), V),
    Case("permute_random", lambda: jb.Permute.random(4, seed=3), V),
    Case("reverse_channels", lambda: jb.Reverse(event_ndims=3), IMG),
    Case("squeeze", lambda: jb.Squeeze(), IMG, same_shape=False),
    Case("unsqueeze", lambda: jb.Inverse(jb.Squeeze()), (2, 2, 8), same_shape=False),
    Case("reshape", lambda: jb.Chain([jb.Reshape(IMG, (32,)), jb.Reverse(),
                                      jb.Inverse(jb.Reshape(IMG, (32,)))]), IMG),
    Case("masked_coupling_half", lambda: jb.MaskedCoupling("half", 0, MLP8()), V),
    Case("masked_coupling_alternate_exp",
         lambda: jb.MaskedCoupling("alternate", 1, MLP8(), scale_map="exp"), V),
    Case("masked_coupling_checkerboard", lambda: jb.MaskedCoupling("checkerboard", 0, CNN4()),
         IMG),
    Case("masked_coupling_channel_sigmoid",
         lambda: jb.MaskedCoupling("channel", 1, CNN4(), scale_map="sigmoid"), IMG),
    Case("split_coupling_vector", lambda: jb.SplitCoupling(1, 0, MLP8()), (5,)),
    Case("split_coupling_vector_parity1", lambda: jb.SplitCoupling(1, 1, MLP8()), (5,)),
    Case("split_coupling_additive", lambda: jb.SplitCoupling(1, 0, MLP8(), scale_map="none"), V),
    Case("split_coupling_image", lambda: jb.SplitCoupling(3, 1, CNN4()), IMG),
    Case("factor_out", lambda: jb.FactorOut(jb.ActNorm(event_ndims=3)), IMG),
    Case("factor_out_learned_prior",
         lambda: jb.FactorOut(jb.SplitCoupling(3, 0, CNN4()), learned_prior=True), IMG),
    Case("stack_couplings", lambda: jb.Stack(
        lambda: jb.Chain([jb.ActNorm(), jb.SplitCoupling(1, 0, MLP8()), jb.Reverse()]), 3), V),
    Case("stack_remat", lambda: jb.Stack(
        lambda: jb.SplitCoupling(1, 0, MLP8()), 2, remat=True), V),
    Case("chain_inverse", lambda: jb.Inverse(jb.Chain([jb.ActNorm(),
                                                       jb.MaskedCoupling("half", 1, MLP8())])), V),
    Case("invconv_plain", lambda: jb.InvertibleConv1x1(lu=False), IMG),
    Case("invconv_lu", lambda: jb.InvertibleConv1x1(lu=True), (2, 2, 5)),
    Case("glow_step", lambda: jb.GlowStep(hidden=4), IMG),
    Case("glow_step_additive_plain", lambda: jb.GlowStep(hidden=4, coupling="additive",
                                                          lu=False), IMG),
    # models
    Case("model_nice_vector", lambda: jm.nice((4,), hidden=(8,), dtype=DT), V),
    Case("model_nice_image", lambda: jm.nice(IMG, hidden=(8,), dtype=DT), IMG),
    Case("model_realnvp_vector", lambda: jm.realnvp((4,), hidden=(8,), actnorm=True, dtype=DT), V),
    # a learned diagonal Gaussian base (DiagonalGaussian) under a coupling flow
    Case("model_realnvp_vector_diagonal_base", lambda: jm.realnvp(
        (4,), hidden=(8,), base="diagonal", dtype=DT), V),
    Case("model_realnvp_vector_pre", lambda: jm.realnvp(
        (2,), hidden=(8,), preprocessing=jm.vector_preprocessing((1.0, -1.0), (2.0, 0.5)),
        dtype=DT), (2,)),
    Case("model_realnvp_image", lambda: jm.realnvp(IMG, conv_hidden=4, n_levels=2, dtype=DT), IMG),
    # the bijective part of the digits models: their pre-processing after the dequantization
    # layer, on dequantized data (the full models are stochastic: tests/test_contract_kinds.py)
    Case("model_realnvp_image_digits", lambda: jm.realnvp(
        IMG1, conv_hidden=4, n_levels=2, actnorm=True,
        preprocessing=jm.image_preprocessing(17, logit_alpha=0.05)[1:], dtype=DT), IMG1,
        uniform=(0.0, 17.0)),
    Case("model_realnvp_vector_conditional", lambda: jm.realnvp(
        (4,), n_couplings=2, hidden=(8,), actnorm=True, context_shape=(3,), dtype=DT), V,
         context=(3,)),
    Case("split_coupling_conditional", lambda: jb.SplitCoupling(1, 0, MLP8(), use_context=True),
         (5,), context=(2,)),
    Case("glow_step_conditional", lambda: jb.GlowStep(hidden=4, use_context=True), IMG,
         context=(2,)),
]

CASES += [
    Case("model_glow_small", lambda: jm.glow(IMG, levels=2, steps=2, hidden=4, dtype=DT), IMG),
    Case("model_glow_digits", lambda: jm.glow(
        IMG1, levels=2, steps=2, hidden=4, preprocessing=jm.image_preprocessing(17)[1:],
        dtype=DT),
        IMG1, uniform=(0.0, 17.0)),
]

RES_MLP = functools.partial(jb.LipschitzMLP, (8, 8), coeff=0.9, last_init_scale=1.0)
RES_CNN = functools.partial(jb.LipschitzCNN, 4, coeff=0.9, last_init_scale=1.0)

CASES += [
    Case("residual_mlp_exact", lambda: jb.ResidualBlock(RES_MLP(), logdet="exact"), V,
         perturb=0.05),
    Case("residual_mlp_elu_mixed_norms", lambda: jb.ResidualBlock(
        RES_MLP(activation="elu", norm_orders=(2.0, 1.5, 3.0, 2.0)), logdet="exact"), V,
         perturb=0.05),
    Case("residual_cnn_exact", lambda: jb.ResidualBlock(RES_CNN(), logdet="exact"), IMG,
         perturb=0.05),
    Case("residual_stack", lambda: jb.Stack(lambda: jb.Chain(
        [jb.ResidualBlock(RES_MLP(), logdet="exact"), jb.ActNorm()]), 2), V, perturb=0.05),
    Case("model_resflow_vector", lambda: jm.resflow((4,), n_blocks=2, hidden=(8,),
                                                    training=False, dtype=DT), V, perturb=0.05),
    Case("model_iresnet_vector", lambda: jm.iresnet((4,), n_blocks=2, hidden=(8,),
                                                    training=False, dtype=DT), V, perturb=0.05),
    Case("model_resflow_image", lambda: jm.resflow(
        IMG, n_blocks=1, hidden=4, fc_blocks=1, fc_hidden=(8,), exact_max_dims=64,
        training=False, dtype=DT), IMG, perturb=0.05),
    Case("model_iresnet_image", lambda: jm.iresnet(
        IMG, n_blocks=1, hidden=4, exact_max_dims=64, training=False, dtype=DT), IMG, perturb=0.05),
]

MINT = functools.partial(jb.MintLayer, hidden=4)

CASES += [
    Case("mint_lower", lambda: MINT(), IMG, perturb=0.05),
    Case("mint_upper_leaky_relu", lambda: MINT(upper=True, activation="leaky_relu"), IMG,
         perturb=0.05),
    Case("model_mintnet_small", lambda: jm.mintnet(
        IMG, stages=2, layers_per_stage=1, hidden=4, dtype=DT), IMG, perturb=0.05),
]

SPLINE = functools.partial(jb.SplineCoupling, num_bins=4)

CASES += [
    Case("spline_coupling", lambda: SPLINE(1, 0, MLP8()), V, perturb=0.3),
    Case("spline_coupling_parity1_narrow", lambda: SPLINE(1, 1, MLP8(), bound=1.5), (5,),
         perturb=0.3),
    Case("spline_coupling_image", lambda: SPLINE(3, 1, CNN4()), IMG, perturb=0.3),
    Case("spline_coupling_conditional", lambda: SPLINE(1, 0, MLP8(), use_context=True), (5,),
         context=(2,), perturb=0.3),
    Case("model_nsf_vector", lambda: jm.nsf((4,), n_couplings=2, hidden=(8,), num_bins=4,
                                            actnorm=True, dtype=DT), V, perturb=0.3),
    Case("model_nsf_vector_conditional", lambda: jm.nsf(
        (3,), n_couplings=2, hidden=(8,), num_bins=4, context_shape=(2,), dtype=DT), (3,),
         context=(2,), perturb=0.3),
    Case("model_nsf_image", lambda: jm.nsf(IMG, n_couplings=2, hidden=4, num_bins=4, dtype=DT),
         IMG, perturb=0.3),
]

MADE8 = functools.partial(jb.MADE, (8, 8))
AR = functools.partial(jb.MaskedAutoregressive, num_bins=4)

CASES += [
    Case("maf_affine", lambda: AR(MADE8(), transform="affine", direction="maf"), V),
    Case("iaf_affine", lambda: AR(MADE8(order="reverse"), transform="affine", direction="iaf"),
         V),
    Case("maf_spline", lambda: AR(MADE8(), transform="spline", direction="maf"), V,
         perturb=0.3),
    Case("iaf_spline", lambda: AR(MADE8(degrees="random", seed=1), transform="spline",
                                  direction="iaf"), V, perturb=0.3),
    Case("maf_spline_conditional", lambda: AR(MADE8(), transform="spline", use_context=True),
         (3,), context=(2,), perturb=0.3),
    Case("iaf_affine_conditional", lambda: AR(MADE8(), direction="iaf", use_context=True),
         (3,), context=(2,)),
    Case("model_maf", lambda: jm.maf((3,), n_layers=2, hidden=(8,), dtype=DT), (3,)),
    Case("model_maf_spline_random", lambda: jm.maf(
        (3,), n_layers=2, hidden=(8,), transform="spline", num_bins=4, permutation="random",
        dtype=DT), (3,), perturb=0.3),
    Case("model_maf_conditional", lambda: jm.maf(
        (3,), n_layers=2, hidden=(8,), context_shape=(2,), dtype=DT), (3,), context=(2,)),
    Case("model_iaf", lambda: jm.iaf((3,), n_layers=2, hidden=(8,), dtype=DT), (3,)),
    Case("model_iaf_spline", lambda: jm.iaf(
        (3,), n_layers=2, hidden=(8,), transform="spline", num_bins=4, dtype=DT), (3,),
         perturb=0.3),
]
