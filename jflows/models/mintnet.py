"""MintNet (Song, Meng & Ermon, 2019): masked-convolution layers with triangular Jacobians."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import ActNorm, Bijector, Chain, Inverse, MintLayer, Squeeze, Stack
from jflows.errors import ConfigError
from jflows.models.common import assemble_flow, model_dtype, require_image_scales
from jflows.models.flow import Flow


def stage_hidden(hidden: int, channels: int) -> int:
    """Hidden channels of a stage with ``channels`` image channels: a multiple of them.

    ``max(1, hidden // channels) * channels``, so the width stays near ``hidden`` as squeezes
    multiply the channels by 4.

    Example:
        >>> [stage_hidden(32, c) for c in (1, 4, 16, 64)]
        [32, 32, 32, 64]
    """
    return max(1, hidden // channels) * channels


def _pair(actnorm: bool, dtype: str, **layer) -> Bijector:
    """[ActNorm], a lower and an upper Mint layer: every output sees every input pixel."""
    layers: list[Bijector] = [ActNorm(event_ndims=3, param_dtype=dtype)] if actnorm else []
    layers += [MintLayer(upper=False, param_dtype=dtype, **layer),
               MintLayer(upper=True, param_dtype=dtype, **layer)]
    return Chain(layers)


def mintnet(
    event_shape: Sequence[int],
    *,
    stages: int = 2,
    layers_per_stage: int = 4,
    hidden: int = 32,
    kernel_size: int = 3,
    activation: Literal["elu", "leaky_relu"] = "elu",
    actnorm: bool = True,
    last_init_scale: float = 0.01,
    inverse_damping: float = 0.5,
    inverse_max_iter: int | None = None,
    inverse_atol: float | None = None,
    inverse_rtol: float | None = None,
    on_nonconvergence: Literal["raise", "nan", "ignore"] = "raise",
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    """A MintNet for channels-last images: paired lower/upper masked-convolution layers.

    ``stages`` stages with a squeeze (space-to-depth) between consecutive ones; each stage is
    ``layers_per_stage`` pairs of [ActNorm,] a lower- and an upper-triangular
    :class:`~jflows.bijectors.MintLayer` (stacked with ``nn.scan``). Every log-det is exact
    (the sum of the logs of the triangular Jacobian's diagonal). The latent is un-squeezed back
    to the data's shape; there is no factor-out (as in the paper's density models). Sampling
    inverts every layer by MintNet's damped fixed-point iteration (see ``inverse_*``).

    Args:
        event_shape: ``(H, W, C)``; H and W divisible by ``2 ** (stages - 1)``.
        stages: number of scales.
        layers_per_stage: lower/upper pairs per stage.
        hidden: hidden channels of each layer, rounded down to a multiple of the stage's
            channels (at least one group; :func:`stage_hidden`).
        kernel_size: odd kernel size of the masked convolutions.
        activation: ``"elu"`` (MintNet's) or ``"leaky_relu"``.
        actnorm: ActNorm in front of every pair.
        last_init_scale: factor on the initial weights of each layer's last convolution.
        inverse_damping: step size alpha in (0, 2) of the damped inverse iteration.
        inverse_max_iter: iteration cap of each layer's inverse (None: 500).
        inverse_atol: absolute tolerance of the inverse (default 1e-5, 1e-10 in float64).
        inverse_rtol: relative tolerance of the inverse (same defaults).
        on_nonconvergence: ``"raise"``, ``"nan"`` or ``"ignore"`` for a failed inverse.
        unroll: pairs per iteration of each stage's ``nn.scan`` loop (``True``: all; faster
            convolution gradients on CPU, as in ``glow``).
        preprocessing: bijectors applied first (``image_preprocessing(levels)``).
        training: accepted for a uniform factory signature; MintNet has no mode-dependent parts.
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``JAX_ENABLE_X64=1``).

    Returns:
        A :class:`~jflows.models.Flow`.

    Example:
        >>> flow = mintnet((8, 8, 1), stages=2, layers_per_stage=4, hidden=32)
        >>> shapes = jax.eval_shape(flow.init, key, jnp.zeros((1, 8, 8, 1)))  # traced only
        >>> sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))
        172624
    """
    del training
    dtype = model_dtype(dtype, "mintnet")
    _, _, c = require_image_scales(
        "mintnet", event_shape, ("stages", stages), ("layers_per_stage", layers_per_stage),
        squeezes=stages - 1, hint="; for vectors use realnvp or resflow",
    )
    if hidden < 1:
        raise ConfigError(f"mintnet hidden must be a positive int, got {hidden!r}; e.g. 32")
    layer = dict(
        kernel_size=kernel_size, activation=activation, last_init_scale=last_init_scale,
        inverse_damping=inverse_damping, inverse_max_iter=inverse_max_iter,
        inverse_atol=inverse_atol, inverse_rtol=inverse_rtol,
        on_nonconvergence=on_nonconvergence,
    )
    layers: list[Bijector] = []
    for stage in range(stages):
        if stage:
            layers.append(Squeeze())
        width = stage_hidden(hidden, c * 4**stage)
        make = functools.partial(_pair, actnorm, dtype, hidden=width, **layer)
        layers.append(Stack(make, length=layers_per_stage, unroll=unroll))
    layers += [Inverse(Squeeze()) for _ in range(stages - 1)]
    return assemble_flow(event_shape, [Chain(layers)], preprocessing, "standard", dtype)
