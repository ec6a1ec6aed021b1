"""RealNVP (Dinh, Sohl-Dickstein & Bengio, 2017) for vectors and multi-scale images."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import (
    MLP,
    ActNorm,
    Bijector,
    Chain,
    ConvNet,
    FactorOut,
    Inverse,
    MaskedCoupling,
    SplitCoupling,
    Squeeze,
    Stack,
)
from jflows.errors import ConfigError
from jflows.models.common import assemble_flow, event_kind, model_dtype, require_two_dims
from jflows.models.flow import Flow


def _coupling_pair(
    event_ndims: int,
    hidden: Sequence[int],
    scale_map: str,
    actnorm: bool,
    dtype: str,
    use_context: bool = False,
):
    layers: list[Bijector] = []
    for parity in (0, 1):
        if actnorm:
            layers.append(ActNorm(event_ndims=event_ndims, param_dtype=dtype))
        layers.append(
            SplitCoupling(
                event_ndims=event_ndims,
                parity=parity,
                conditioner=MLP(tuple(hidden), param_dtype=dtype),
                scale_map=scale_map,
                use_context=use_context,
            )
        )
    return Chain(layers)


def _image_level(
    level: int,
    n_levels: int,
    hidden: int,
    scale_map: str,
    actnorm: bool,
    n_checkerboard: int,
    n_channel: int,
    dtype: str,
    use_context: bool = False,
) -> Bijector:
    """One scale: checkerboard couplings, squeeze, channel couplings, factor out the rest."""

    def net():
        return ConvNet(hidden, param_dtype=dtype)

    def checkerboard(parity):
        return MaskedCoupling(
            mask="checkerboard",
            parity=parity,
            conditioner=net(),
            scale_map=scale_map,
            use_context=use_context,
        )

    def channel(parity):
        return SplitCoupling(
            event_ndims=3,
            parity=parity,
            conditioner=net(),
            scale_map=scale_map,
            use_context=use_context,
        )

    def norm():
        return [ActNorm(event_ndims=3, param_dtype=dtype)] if actnorm else []

    if level == n_levels - 1:
        layers: list[Bijector] = []
        for i in range(n_checkerboard + 1):
            layers += [*norm(), checkerboard(i % 2)]
        return Chain(layers)
    layers = []
    for i in range(n_checkerboard):
        layers += [*norm(), checkerboard(i % 2)]
    layers.append(Squeeze())
    for i in range(n_channel):
        layers += [*norm(), channel(i % 2)]
    inner = _image_level(
        level + 1, n_levels, hidden, scale_map, actnorm, n_checkerboard, n_channel, dtype,
        use_context,
    )
    layers += [FactorOut(inner), Inverse(Squeeze())]
    return Chain(layers)


def realnvp(
    event_shape: Sequence[int],
    *,
    n_couplings: int = 8,
    hidden: tuple[int, ...] = (128, 128),
    n_levels: int = 2,
    conv_hidden: int = 64,
    n_checkerboard: int = 3,
    n_channel: int = 3,
    scale_map: Literal["tanh", "sigmoid", "exp", "none"] = "tanh",
    actnorm: bool = False,
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    base: Literal["standard", "diagonal"] = "standard",
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
    context_shape: tuple[int, ...] | None = None,
) -> Flow:
    """A RealNVP flow, optionally conditional.

    Vectors ``(d,)``: ``n_couplings`` affine couplings on alternating halves (parity 0, 1,
    0, ...), each with an MLP conditioner of widths ``hidden``, stacked with ``nn.scan`` in
    pairs. Images ``(H, W, C)``: the multi-scale architecture of the paper: at every level
    but the last, ``n_checkerboard`` checkerboard couplings, a squeeze, ``n_channel``
    channel-wise couplings and a factor-out of half the channels; the last level has
    ``n_checkerboard + 1`` checkerboard couplings. Conditioners are ``ConvNet(conv_hidden)``
    (3x3-1x1-3x3; the paper's ResNets are swapped for this CPU-sized network).

    Args:
        event_shape: ``(d,)`` or ``(H, W, C)``.
        n_couplings: number of couplings for vectors (even).
        hidden: MLP widths for vectors.
        n_levels: number of scales for images (H and W must be divisible by
            ``2 ** (n_levels - 1)``).
        conv_hidden: channels of the image conditioners.
        n_checkerboard: checkerboard couplings per level.
        n_channel: channel-wise couplings per level.
        scale_map: scale parameterisation (``"tanh"``: bounded, the default).
        actnorm: put an ActNorm before every coupling.
        unroll: coupling pairs per iteration of the vector stack's ``nn.scan`` loop (``True``:
            all of them). Unrolled, the 2-D training step of
            ``benchmarks/workloads/w2_realnvp2d.py`` is
            ~10% faster on CPU at about the same compile time; pass 1 for very deep stacks.
        preprocessing: bijectors applied first (see ``jflows.models.preprocessing``).
        base: ``"standard"`` normal or learned ``"diagonal"`` Gaussian.
        training: training or evaluation mode; accepted for a uniform factory signature
            (coupling flows have no mode-dependent estimators, so it is unused).
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``JAX_ENABLE_X64=1``): the
            dtype of every parameter, base draw and computation (see :class:`Flow`).
        context_shape: shape of one context (e.g. ``(k,)``) for a conditional flow
            ``p(x | c)``: every coupling's conditioner also sees the context (appended to its
            input; for images a ``(k,)`` context is repeated over the pixels). Then pass
            ``context=...`` to ``log_prob`` and ``sample``. None: unconditional.

    Returns:
        A :class:`~jflows.models.Flow`.

    Raises:
        ConfigError: for one-dimensional vectors (the couplings need two halves; use
            :func:`~jflows.models.resflow` or :func:`~jflows.models.iresnet`).

    Example:
        >>> x = 3.0 * jax.random.normal(key, (8, 2)) + 1.0
        >>> standardise = jflows.models.vector_preprocessing(x.mean(0).tolist(), x.std(0).tolist())
        >>> flow = realnvp((2,), n_couplings=2, hidden=(8,), preprocessing=standardise)
        >>> variables = flow.init(key, x)
        >>> flow.apply(variables, x, method="log_prob").shape
        (8,)
        >>> conditional = realnvp((2,), n_couplings=2, hidden=(8,), context_shape=(1,))
        >>> c = jnp.linspace(-1.0, 1.0, 8)[:, None]
        >>> variables = conditional.init(key, x, c, method="log_prob")
        >>> conditional.apply(variables, x, c, method="log_prob").shape
        (8,)
    """
    kind = event_kind(event_shape)
    dtype = model_dtype(dtype, "realnvp")
    use_context = context_shape is not None
    if kind == "vector":
        require_two_dims("realnvp", event_shape)
        if n_couplings < 2 or n_couplings % 2:
            raise ConfigError(f"n_couplings must be a positive even number, got {n_couplings}")
        make = functools.partial(
            _coupling_pair, 1, tuple(hidden), scale_map, actnorm, dtype, use_context
        )
        layers: list[Bijector] = [Stack(make, length=n_couplings // 2, unroll=unroll)]
    else:
        h, w, _ = event_shape
        div = 2 ** (n_levels - 1)
        if n_levels < 1 or h % div or w % div:
            raise ConfigError(
                f"n_levels={n_levels} needs H and W divisible by {div}, got {h}x{w}"
            )
        layers = [
            _image_level(
                0, n_levels, conv_hidden, scale_map, actnorm, n_checkerboard, n_channel, dtype,
                use_context,
            )
        ]
    return assemble_flow(event_shape, layers, preprocessing, base, dtype, context_shape)
