"""Layers (bijectors, surjections, stochastic layers): thin Flax modules over the kernels."""

from jflows.bijectors.absolute import AbsoluteValue
from jflows.bijectors.actnorm import ActNorm
from jflows.bijectors.augment import Augment
from jflows.bijectors.autoregressive import MaskedAutoregressive
from jflows.bijectors.base import Bijector, Estimate, Kind, Layer, require_rng
from jflows.bijectors.chain import Chain, Inverse
from jflows.bijectors.cif import IndexedBijection
from jflows.bijectors.conditioners import MLP, ConvNet
from jflows.bijectors.coupling import MaskedCoupling, SplitCoupling
from jflows.bijectors.densities import ConditionalBernoulli, ConditionalGaussian
from jflows.bijectors.dequantization import UniformDequantization
from jflows.bijectors.elementwise import ElementwiseAffine, FixedAffine
from jflows.bijectors.factor_out import FactorOut
from jflows.bijectors.glow_step import GlowStep
from jflows.bijectors.invconv import InvertibleConv1x1
from jflows.bijectors.lattice_dequantization import LatticeDequantization
from jflows.bijectors.lipschitz_nets import LipschitzCNN, LipschitzMLP
from jflows.bijectors.logit import Logit
from jflows.bijectors.made import MADE, MaskedDense
from jflows.bijectors.masks import make_mask
from jflows.bijectors.max_pool import MaxPool2d
from jflows.bijectors.mint import MintLayer
from jflows.bijectors.permutation import Permute, Reverse
from jflows.bijectors.reshape import Reshape
from jflows.bijectors.residual import InverseNotConvergedError, ResidualBlock
from jflows.bijectors.slice import Slice
from jflows.bijectors.sort import Sort, StochasticPermutation
from jflows.bijectors.spline_coupling import SplineCoupling
from jflows.bijectors.squeeze import Squeeze
from jflows.bijectors.stack import Stack
from jflows.bijectors.variational_dequantization import VariationalDequantization

__all__ = [
    "AbsoluteValue",
    "ActNorm",
    "Augment",
    "Bijector",
    "Chain",
    "ConditionalBernoulli",
    "ConditionalGaussian",
    "ConvNet",
    "ElementwiseAffine",
    "Estimate",
    "FactorOut",
    "FixedAffine",
    "GlowStep",
    "IndexedBijection",
    "Inverse",
    "InverseNotConvergedError",
    "InvertibleConv1x1",
    "Kind",
    "LatticeDequantization",
    "Layer",
    "LipschitzCNN",
    "LipschitzMLP",
    "Logit",
    "MADE",
    "MLP",
    "MaskedAutoregressive",
    "MaskedCoupling",
    "MaskedDense",
    "MaxPool2d",
    "MintLayer",
    "Permute",
    "Reshape",
    "ResidualBlock",
    "Reverse",
    "Slice",
    "Sort",
    "SplineCoupling",
    "SplitCoupling",
    "Squeeze",
    "Stack",
    "StochasticPermutation",
    "UniformDequantization",
    "VariationalDequantization",
    "make_mask",
    "require_rng",
]
