"""i-ResNet and Residual Flows for vectors and multi-scale images (the factories)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import Bijector
from jflows.models.common import event_kind, model_dtype
from jflows.models.flow import Flow
from jflows.models.residual_builder import residual_flow

Activation = Literal["lipswish", "elu", "softplus", "tanh", "relu", "identity"]
"""The 1-Lipschitz activations of residual blocks (see ``LIPSCHITZ_ACTIVATIONS``)."""


def resflow(
    event_shape: Sequence[int],
    *,
    n_blocks: int | None = None,
    hidden: tuple[int, ...] | int | None = None,
    coeff: float | None = None,
    activation: Activation = "lipswish",
    logdet: Literal["roulette", "series", "exact"] = "roulette",
    n_exact_terms: int = 2,
    tail: Literal["geometric", "poisson"] | None = None,
    gradient: Literal["neumann", "backprop"] = "neumann",
    actnorm: bool = True,
    n_scales: int = 2,
    fc_blocks: int = 2,
    fc_hidden: tuple[int, ...] = (64,),
    factor_out: bool = False,
    exact_max_dims: int = 16,
    power_iterations: int = 5,
    last_init_scale: float = 1e-3,
    inverse_max_iter: int | None = None,
    inverse_atol: float | None = None,
    inverse_rtol: float | None = None,
    on_nonconvergence: Literal["raise", "nan", "ignore"] = "raise",
    remat_surrogate: bool = True,
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    base: Literal["standard", "diagonal"] = "standard",
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    """A Residual Flow (Chen et al., 2019): LipSwish residual blocks with an unbiased log-det.

    Vectors: ``n_blocks`` blocks ``x + g(x)`` (``g`` an MLP of widths ``hidden`` with spectral
    normalisation ``coeff``), each followed by ActNorm, after an initial ActNorm (Residual
    Flows' placement). Images: ``n_scales`` scales of ``n_blocks`` convolutional blocks
    (3x3-1x1-3x3, ``hidden`` channels) with a squeeze between scales (and optional factor-out of
    half the channels), then ``fc_blocks`` fully connected blocks on the flattened last scale;
    the latent is un-squeezed back to the data's shape.

    Training log-det: ``logdet="roulette"`` with ``n_exact_terms`` exact terms and a ``tail``
    (geometric(0.5) for vectors, Poisson(2) for images, as in the reference scripts) and
    Neumann-series gradients. ``training=False`` builds the evaluation model: exact log-det for
    events of at most ``exact_max_dims`` scalars, otherwise 20 exact terms plus the tail.

    Args:
        event_shape: ``(d,)`` or ``(H, W, C)``.
        n_blocks: blocks (per scale for images); default 10 (vectors) or 4 (images).
        hidden: MLP widths (vectors, default (128, 128)) or conv channels (images, default 32).
        coeff: Lipschitz coefficient per layer in (0, 1); default 0.97 (vectors), 0.98 (images).
        activation: ``"lipswish"`` (default), ``"elu"``, ``"softplus"``, ...
        logdet: ``"roulette"``, ``"series"`` or ``"exact"`` (training).
        n_exact_terms: exact series terms in training.
        tail: ``"geometric"`` or ``"poisson"``.
        gradient: ``"neumann"`` or ``"backprop"`` (series only).
        actnorm: ActNorm before the first block and after every block.
        n_scales: image scales.
        fc_blocks: fully connected blocks at the end (images).
        fc_hidden: widths of the fully connected blocks.
        factor_out: factor out half the channels after each squeeze (images).
        exact_max_dims: evaluation uses the exact log-det up to this many scalars per event.
        power_iterations: power iterations per training step (evaluation models, which
            refresh before evaluating, use 100).
        last_init_scale: factor on each branch's last-layer initial weights.
        inverse_max_iter: iteration cap of the fixed-point inverse and of its adjoint; ``None``
            computes it per block from the Banach bound for the dtype's tolerance (at least
            200, see :class:`~jflows.bijectors.ResidualBlock`).
        inverse_atol: absolute tolerance of the inverse (default 1e-5, 1e-10 in float64).
        inverse_rtol: relative tolerance of the inverse (same defaults).
        on_nonconvergence: ``"raise"``, ``"nan"`` or ``"ignore"`` for a failed inverse.
        remat_surrogate: Neumann gradients as one custom VJP that recomputes the surrogate in
            the backward pass (default; reverse mode only), see
            :class:`~jflows.bijectors.ResidualBlock`.
        unroll: blocks per iteration of the convolutional stacks' ``nn.scan`` loops
            (``True``: all; XLA on CPU computes convolution-kernel gradients inside a compiled
            loop about 10x slower, ``python -m benchmarks.investigations.scan_unroll``). Dense
            stacks keep one
            block per iteration, so their compile time stays flat in depth. Training models
            only: evaluation models (``training=False``) compute no kernel gradients and
            scan one block per iteration (W4: its evaluation compiles about 3x faster, runs as
            fast), and ``init`` always does.
        preprocessing: bijectors applied first (``vector_preprocessing`` /
            ``image_preprocessing``).
        base: ``"standard"`` or ``"diagonal"``.
        training: build the training (True) or evaluation (False) estimator settings.
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``JAX_ENABLE_X64=1``): the
            dtype of every parameter, power-iteration vector, base draw and computation.

    Returns:
        A :class:`~jflows.models.Flow`.

    Example:
        >>> flow = resflow((2,), n_blocks=10, hidden=(128, 128), actnorm=False)  # benchmark W1
        >>> rngs = {"params": key, "logdet": key}  # the roulette log-det draws from "logdet"
        >>> shapes = jax.eval_shape(flow.init, rngs, jnp.zeros((1, 2)))  # traced, not compiled
        >>> "lipschitz" in shapes  # the power-iteration vectors of the spectral norms
        True
        >>> sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))
        171570
    """
    kind = event_kind(event_shape)
    vector = kind == "vector"
    return residual_flow(
        event_shape,
        n_blocks=n_blocks if n_blocks is not None else (10 if vector else 4),
        hidden=hidden if hidden is not None else ((128, 128) if vector else 32),
        coeff=coeff if coeff is not None else (0.97 if vector else 0.98),
        activation=activation,
        logdet=logdet,
        n_exact_terms=n_exact_terms,
        tail=tail if tail is not None else ("geometric" if vector else "poisson"),
        gradient=gradient,
        actnorm=actnorm,
        n_scales=n_scales,
        fc_blocks=fc_blocks,
        fc_hidden=fc_hidden,
        factor_out=factor_out,
        exact_max_dims=exact_max_dims,
        power_iterations=power_iterations,
        last_init_scale=last_init_scale,
        inverse_max_iter=inverse_max_iter,
        inverse_atol=inverse_atol,
        inverse_rtol=inverse_rtol,
        on_nonconvergence=on_nonconvergence,
        remat_surrogate=remat_surrogate,
        unroll=unroll,
        preprocessing=preprocessing,
        base=base,
        training=training,
        dtype=model_dtype(dtype, "resflow"),
    )


def iresnet(
    event_shape: Sequence[int],
    *,
    n_blocks: int | None = None,
    hidden: tuple[int, ...] | int | None = None,
    coeff: float = 0.9,
    activation: Activation = "elu",
    n_terms: int = 5,
    gradient: Literal["neumann", "backprop"] = "neumann",
    actnorm: bool = True,
    n_scales: int = 2,
    fc_blocks: int = 0,
    fc_hidden: tuple[int, ...] = (64,),
    factor_out: bool = True,
    exact_max_dims: int = 16,
    power_iterations: int = 5,
    inverse_max_iter: int | None = None,
    inverse_atol: float | None = None,
    inverse_rtol: float | None = None,
    on_nonconvergence: Literal["raise", "nan", "ignore"] = "raise",
    remat_surrogate: bool = True,
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    base: Literal["standard", "diagonal"] = "diagonal",
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    """An invertible ResNet (Behrmann et al., 2019): ELU residual blocks, truncated log-det.

    Same architecture as :func:`resflow` with the i-ResNet settings: ELU, ``coeff=0.9``, the
    biased truncated series with ``n_terms`` terms, factor-out between scales and a learned
    diagonal Gaussian prior. Its gradient is the Neumann-series estimator by default;
    ``gradient="backprop"`` differentiates through the series as the i-ResNet code does (time
    and memory grow with ``n_terms``; compare with ``benchmarks/investigations/residual_step.py``).
    Evaluation (``training=False``) is exact for small events and otherwise uses 20 exact terms
    plus a Poisson roulette tail, so reported likelihoods are not biased by the truncation.

    Args:
        event_shape: ``(d,)`` or ``(H, W, C)``.
        n_blocks: blocks (per scale for images); default 10 (vectors) or 4 (images).
        hidden: MLP widths (vectors, default (128, 128)) or conv channels (images, default 32).
        coeff: Lipschitz coefficient per layer, in (0, 1).
        activation: ``"elu"`` (default) or another 1-Lipschitz activation.
        n_terms: power-series terms in training.
        gradient: ``"neumann"`` or ``"backprop"`` through the series.
        actnorm: ActNorm before the first block and after every block.
        n_scales: image scales.
        fc_blocks: fully connected blocks at the end (images).
        fc_hidden: widths of the fully connected blocks.
        factor_out: factor out half the channels after each squeeze (images).
        exact_max_dims: evaluation uses the exact log-det up to this many scalars per event.
        power_iterations: power iterations per training step (evaluation models use 100).
        inverse_max_iter: iteration cap of the fixed-point inverse and of its adjoint; ``None``
            computes it per block from the Banach bound for the dtype's tolerance (at least
            200, see :class:`~jflows.bijectors.ResidualBlock`).
        inverse_atol: absolute tolerance of the inverse (default 1e-5, 1e-10 in float64).
        inverse_rtol: relative tolerance of the inverse (same defaults).
        on_nonconvergence: ``"raise"``, ``"nan"`` or ``"ignore"`` for a failed inverse.
        remat_surrogate: Neumann gradients as one custom VJP that recomputes the surrogate in
            the backward pass (default; reverse mode only), see
            :class:`~jflows.bijectors.ResidualBlock`.
        unroll: blocks per iteration of the convolutional stacks' ``nn.scan`` loops
            (``True``: all; XLA on CPU computes convolution-kernel gradients inside a compiled
            loop about 10x slower, ``python -m benchmarks.investigations.scan_unroll``). Dense
            stacks keep one
            block per iteration, so their compile time stays flat in depth. Training models
            only: evaluation models (``training=False``) compute no kernel gradients and
            scan one block per iteration (W4: its evaluation compiles about 3x faster, runs as
            fast), and ``init`` always does.
        preprocessing: bijectors applied first.
        base: ``"diagonal"`` (learned, i-ResNet's default) or ``"standard"``.
        training: training (True) or evaluation (False) estimator settings.
        dtype: ``"float32"`` (default) or ``"float64"`` (as in :func:`resflow`).

    Returns:
        A :class:`~jflows.models.Flow`.
    """
    vector = event_kind(event_shape) == "vector"
    return residual_flow(
        event_shape,
        n_blocks=n_blocks if n_blocks is not None else (10 if vector else 4),
        hidden=hidden if hidden is not None else ((128, 128) if vector else 32),
        coeff=coeff,
        activation=activation,
        logdet="series",
        n_exact_terms=n_terms,
        tail="poisson",
        gradient=gradient,
        actnorm=actnorm,
        n_scales=n_scales,
        fc_blocks=fc_blocks,
        fc_hidden=fc_hidden,
        factor_out=factor_out,
        exact_max_dims=exact_max_dims,
        power_iterations=power_iterations,
        last_init_scale=1.0,
        inverse_max_iter=inverse_max_iter,
        inverse_atol=inverse_atol,
        inverse_rtol=inverse_rtol,
        on_nonconvergence=on_nonconvergence,
        remat_surrogate=remat_surrogate,
        unroll=unroll,
        preprocessing=preprocessing,
        base=base,
        training=training,
        dtype=model_dtype(dtype, "iresnet"),
    )
