"""A multi-scale image flow whose scales are joined by max-pool surjections (SurVAE flows)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import Bijector, GlowStep, Layer, MaxPool2d, Squeeze, Stack
from jflows.models.common import assemble_flow, model_dtype, require_image_scales
from jflows.models.flow import Flow


def maxpool(
    event_shape: Sequence[int],
    *,
    levels: int = 2,
    steps: int = 4,
    hidden: int = 64,
    pool_hidden: int = 32,
    coupling: Literal["affine", "additive"] = "affine",
    lu: bool = True,
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    r"""Glow steps at ``levels`` scales, with 2x2 max-pooling between scales.

    A squeeze to ``(H/2, W/2, 4C)``, then ``steps`` Glow steps (ActNorm, 1x1 convolution,
    coupling; stacked with ``nn.scan``); then ``levels - 1`` times: a max-pool surjection
    (:class:`~jflows.bijectors.MaxPool2d`, halving height and width where Glow would squeeze
    and factor out) followed by ``steps`` Glow steps. The max-pool keeps each window's
    maximum and contributes ``log p(x | z)``: the position of the maximum (uniform) and the
    three other values below it (a learned conditional given the pooled image), so the
    log-likelihood stays exact in the surjections; with the images' dequantization in front
    (``image_preprocessing``) the model's ``log_prob`` is a bound, labelled ``..._bound``.

    The latent is ``(H / 2^levels, W / 2^levels, 4C)`` (``Flow.latent_shape``); ``sample``
    draws the pooled-away values from the learned conditionals.

    Args:
        event_shape: ``(H, W, C)``, H and W divisible by ``2 ** levels``.
        levels: number of scales (``levels - 1`` max-pools).
        steps: Glow steps per scale.
        hidden: channels of the coupling networks.
        pool_hidden: channels of each max-pool's conditional network.
        coupling: ``"affine"`` or ``"additive"``.
        lu: LU-parameterised 1x1 convolutions.
        unroll: steps per iteration of each scale's ``nn.scan`` loop (``True``: all).
        preprocessing: layers applied first (``image_preprocessing(levels)``).
        training: accepted for a uniform factory signature (unused).
        dtype: ``"float32"`` or ``"float64"``.

    Returns:
        A :class:`~jflows.models.Flow`.

    Example:
        >>> flow = maxpool((8, 8, 1), levels=2, steps=1, hidden=4, pool_hidden=4)
        >>> flow.latent_shape, flow.kind.name
        ((2, 2, 4), 'INFERENCE_SURJECTION')
    """
    del training
    dtype = model_dtype(dtype, "maxpool")
    h, w, c = require_image_scales(
        "maxpool", event_shape, ("levels", levels), ("steps", steps), squeezes=levels
    )
    div = 2**levels
    step = functools.partial(GlowStep, hidden=hidden, coupling=coupling, lu=lu, param_dtype=dtype)
    layers: list[Layer] = [Squeeze(), Stack(step, length=steps, unroll=unroll)]
    for _ in range(levels - 1):
        layers += [
            MaxPool2d(hidden=pool_hidden, param_dtype=dtype),
            Stack(step, length=steps, unroll=unroll),
        ]
    latent = (h // div, w // div, 4 * c)
    return assemble_flow(
        event_shape, layers, preprocessing, "standard", dtype, latent_shape=latent
    )
