"""The architecture shared by :func:`jflows.models.resflow` and :func:`jflows.models.iresnet`.

Vectors: an optional ActNorm, then ``n_blocks`` residual blocks (each optionally followed by
ActNorm) stacked with ``nn.scan``. Images: per scale, a stack of convolutional residual blocks,
then squeeze and (optionally) factor out half the channels; the last scale may end with fully
connected blocks on the flattened event. Which log-det estimator each block uses depends on
training versus evaluation (:func:`estimator_settings`).
"""

from __future__ import annotations

import functools
import math

from jflows.bijectors import ActNorm, Bijector, Chain, Inverse, Reshape, Squeeze, Stack
from jflows.bijectors.factor_out import FactorOut
from jflows.bijectors.lipschitz_nets import LipschitzCNN, LipschitzMLP
from jflows.bijectors.residual import ResidualBlock
from jflows.errors import ConfigError
from jflows.kernels.spectral import check_coeff
from jflows.models.common import assemble_flow, event_kind
from jflows.models.flow import Flow

EVAL_EXACT_TERMS = 20
EVAL_POWER_ITERATIONS = 100
"""Power iterations per refresh in evaluation models (Residual Flows: 200 before validation)."""


def estimator_settings(
    dims: int,
    *,
    training: bool,
    logdet: str,
    n_exact_terms: int,
    tail: str,
    gradient: str,
    exact_max_dims: int,
) -> dict:
    """Log-det settings of a residual block for training or evaluation.

    Training uses the requested estimator. Evaluation uses the exact log-det when an event has
    at most ``exact_max_dims`` scalars and otherwise ``EVAL_EXACT_TERMS`` (20) exact terms plus
    the roulette tail, values only (the Residual Flows evaluation protocol).
    """
    if training:
        return dict(logdet=logdet, n_exact_terms=n_exact_terms, tail=tail, gradient=gradient)
    if dims <= exact_max_dims or logdet == "exact":
        return dict(logdet="exact")
    return dict(logdet="roulette", n_exact_terms=EVAL_EXACT_TERMS, tail=tail, gradient="none")


def _vector_blocks(d, n_blocks, hidden, branch_kw, block_kw, actnorm, settings):
    def block():
        res = ResidualBlock(LipschitzMLP(tuple(hidden), **branch_kw), **block_kw, **settings(d))
        return Chain([res, norm()]) if actnorm else res

    def norm():
        return ActNorm(event_ndims=1, param_dtype=branch_kw["param_dtype"])

    layers: list[Bijector] = [norm()] if actnorm else []
    if n_blocks:
        layers.append(Stack(block, length=n_blocks))
    return layers


def _image_blocks(shape, n_blocks, hidden, branch_kw, block_kw, actnorm, settings, unroll):
    dims = math.prod(shape)

    def block():
        res = ResidualBlock(LipschitzCNN(hidden, **branch_kw), **block_kw, **settings(dims))
        norm = ActNorm(event_ndims=3, param_dtype=branch_kw["param_dtype"])
        return Chain([res, norm]) if actnorm else res

    return Stack(block, length=n_blocks, unroll=unroll)


def residual_flow(
    event_shape,
    *,
    n_blocks,
    hidden,
    coeff,
    activation,
    logdet,
    n_exact_terms,
    tail,
    gradient,
    actnorm,
    n_scales,
    fc_blocks,
    fc_hidden,
    factor_out,
    exact_max_dims,
    power_iterations,
    last_init_scale,
    inverse_max_iter,
    remat_surrogate,
    inverse_atol=None,
    inverse_rtol=None,
    on_nonconvergence="raise",
    unroll,
    preprocessing,
    base,
    training,
    dtype="float32",
) -> Flow:
    """Builds the residual flow described in the module docstring (factories pass all settings)."""
    check_coeff(coeff)
    kind = event_kind(event_shape)
    shape = tuple(int(s) for s in event_shape)
    settings = functools.partial(
        estimator_settings,
        training=training,
        logdet=logdet,
        n_exact_terms=n_exact_terms,
        tail=tail,
        gradient=gradient,
        exact_max_dims=exact_max_dims,
    )
    branch_kw = dict(
        coeff=coeff,
        activation=activation,
        power_iterations=power_iterations if training else EVAL_POWER_ITERATIONS,
        last_init_scale=last_init_scale,
        param_dtype=dtype,
    )
    block_kw = dict(
        inverse_max_iter=inverse_max_iter,
        inverse_atol=inverse_atol,
        inverse_rtol=inverse_rtol,
        on_nonconvergence=on_nonconvergence,
        remat_surrogate=remat_surrogate,
    )
    if kind == "vector":
        if n_blocks < 1:
            raise ConfigError(f"n_blocks must be >= 1, got {n_blocks}")
        layers = _vector_blocks(
            shape[0], n_blocks, hidden, branch_kw, block_kw, actnorm, settings
        )
        return assemble_flow(shape, layers, preprocessing, base, dtype)

    h, w, _ = shape
    if n_scales < 1 or h % 2 ** (n_scales - 1) or w % 2 ** (n_scales - 1):
        raise ConfigError(
            f"n_scales={n_scales} needs H and W divisible by {2 ** (n_scales - 1)}, got {h}x{w}"
        )
    conv_hidden = hidden if isinstance(hidden, int) else int(hidden[0])

    # evaluation computes no kernel gradients, the reason to unroll (see resflow's unroll)
    conv_unroll = unroll if training else 1

    def scale(level: int, shape_now: tuple[int, int, int]) -> list[Bijector]:
        layers: list[Bijector] = [
            _image_blocks(
                shape_now, n_blocks, conv_hidden, branch_kw, block_kw, actnorm, settings,
                conv_unroll,
            )
        ]
        if level == n_scales - 1:
            if fc_blocks:
                flat = (math.prod(shape_now),)
                fc = _vector_blocks(
                    flat[0], fc_blocks, fc_hidden, branch_kw, block_kw, actnorm, settings
                )[1 if actnorm else 0 :]
                layers += [Reshape(shape_now, flat), *fc, Inverse(Reshape(shape_now, flat))]
            return layers
        hh, ww, cc = shape_now
        layers.append(Squeeze())
        squeezed = (hh // 2, ww // 2, 4 * cc)
        if factor_out:
            kept = (squeezed[0], squeezed[1], (squeezed[2] + 1) // 2)
            layers.append(FactorOut(Chain(scale(level + 1, kept))))
        else:
            layers += scale(level + 1, squeezed)
        layers.append(Inverse(Squeeze()))
        return layers

    layers = ([ActNorm(event_ndims=3, param_dtype=dtype)] if actnorm else []) + scale(0, shape)
    return assemble_flow(shape, layers, preprocessing, base, dtype)
