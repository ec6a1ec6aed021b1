"""Glow (Kingma & Dhariwal, 2018): multi-scale flow of ActNorm, 1x1 convolution and coupling."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import (
    Bijector,
    Chain,
    ElementwiseAffine,
    FactorOut,
    GlowStep,
    Inverse,
    Squeeze,
    Stack,
)
from jflows.models.common import assemble_flow, model_dtype, require_image_scales
from jflows.models.flow import Flow


def _level(
    level: int,
    n_levels: int,
    steps: int,
    hidden: int,
    coupling: str,
    lu: bool,
    learned_prior: bool,
    unroll: int | bool,
    dtype: str,
) -> Bijector:
    step = functools.partial(GlowStep, hidden=hidden, coupling=coupling, lu=lu, param_dtype=dtype)
    layers: list[Bijector] = [Squeeze(), Stack(step, length=steps, unroll=unroll)]
    if level < n_levels - 1:
        inner = _level(
            level + 1, n_levels, steps, hidden, coupling, lu, learned_prior, unroll, dtype
        )
        layers.append(FactorOut(inner, learned_prior=learned_prior, param_dtype=dtype))
    elif learned_prior:
        # Glow's learned top prior N(mu, sigma^2), written as z = (x - mu) / sigma.
        layers.append(ElementwiseAffine(event_ndims=3, param_dtype=dtype))
    layers.append(Inverse(Squeeze()))
    return Chain(layers)


def glow(
    event_shape: Sequence[int],
    *,
    levels: int = 2,
    steps: int = 4,
    hidden: int = 64,
    coupling: Literal["affine", "additive"] = "affine",
    lu: bool = True,
    learned_prior: bool = True,
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    """A Glow flow for channels-last images.

    ``levels`` times: squeeze, then ``steps`` Glow steps (stacked with ``nn.scan``); after every
    level but the last, half the channels are factored out with Glow's learned conditional
    prior (mean and log-scale from a zero-initialised 3x3 convolution of the kept half); the
    last level ends with the learned top prior. Every prior is written as a bijection in front
    of a standard normal base (see :class:`~jflows.bijectors.FactorOut`), so ``z`` has the data's
    shape, log-dets can be checked by brute force, and ``sample(n, temperature=T)`` scales every
    prior's standard deviation by ``T`` (``T = 0`` gives the prior means).

    Args:
        event_shape: ``(H, W, C)``; H and W divisible by ``2 ** levels``.
        levels: number of scales ``L``.
        steps: Glow steps per scale ``K``.
        hidden: channels of the coupling networks.
        coupling: ``"affine"`` or ``"additive"``.
        lu: LU-parameterised 1x1 convolutions.
        learned_prior: learned conditional and top priors (otherwise N(0, I) everywhere).
        unroll: steps per iteration of each level's ``nn.scan`` loop (``True``: all). The
            default unrolls the loop: XLA on CPU computes convolution-kernel gradients inside a
            compiled loop about 10x slower (``python -m benchmarks.investigations.scan_unroll``),
            while the
            parameters stay stacked and the step is still traced once.
        preprocessing: bijectors applied first (``image_preprocessing(levels)``).
        training: accepted for a uniform factory signature; Glow has no mode-dependent parts.
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``JAX_ENABLE_X64=1``): the
            dtype of every parameter, base draw and computation (see :class:`Flow`).

    Returns:
        A :class:`~jflows.models.Flow`.

    Example:
        The model of benchmark W3 (digits with 17 levels take
        ``preprocessing=image_preprocessing(17)`` too), its parameters counted from shapes:

        >>> flow = glow((8, 8, 1), levels=2, steps=4, hidden=64)
        >>> shapes = jax.eval_shape(flow.init, key, jnp.zeros((1, 8, 8, 1)))  # traced only
        >>> sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))
        76236
    """
    del training
    dtype = model_dtype(dtype, "glow")
    require_image_scales("glow", event_shape, ("levels", levels), ("steps", steps), squeezes=levels)
    core = _level(0, levels, steps, hidden, coupling, lu, learned_prior, unroll, dtype)
    return assemble_flow(event_shape, [core], preprocessing, "standard", dtype)
