"""Neural spline flow (Durkan, Bekasov, Murray & Papamakarios, 2019): spline couplings."""

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
    Inverse,
    Permute,
    SplineCoupling,
    Squeeze,
    Stack,
)
from jflows.bijectors.spline_coupling import check_spline_settings
from jflows.errors import ConfigError
from jflows.kernels.rational_quadratic import DEFAULT_BOUND
from jflows.models.common import (
    assemble_flow,
    event_kind,
    model_dtype,
    require_two_dims,
)
from jflows.models.flow import Flow


def _spline_pair(
    event_ndims: int,
    hidden: tuple[int, ...] | int,
    num_bins: int,
    bound: float,
    actnorm: bool,
    dtype: str,
    use_context: bool,
    permute: tuple[int, ...] | None = None,
) -> Chain:
    """ActNorm (optional) and a spline coupling on each half in turn, then ``permute``.

    ``permute`` is a fixed permutation of the features (None: none).
    """
    layers: list[Bijector] = []
    for parity in (0, 1):
        if actnorm:
            layers.append(ActNorm(event_ndims=event_ndims, param_dtype=dtype))
        if event_ndims == 1:
            net = MLP(hidden, param_dtype=dtype)
        else:
            net = ConvNet(hidden, param_dtype=dtype)
        layers.append(
            SplineCoupling(
                event_ndims=event_ndims,
                parity=parity,
                conditioner=net,
                num_bins=num_bins,
                bound=bound,
                use_context=use_context,
            )
        )
    if permute is not None:
        layers.append(Permute(permute))
    return Chain(layers)


def nsf(
    event_shape: Sequence[int],
    *,
    n_couplings: int = 8,
    hidden: tuple[int, ...] | int = (128, 128),
    num_bins: int = 8,
    bound: float = DEFAULT_BOUND,
    actnorm: bool = False,
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    base: Literal["standard", "diagonal"] = "standard",
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
    context_shape: tuple[int, ...] | None = None,
    permutation: Literal["random", "none"] = "random",
) -> Flow:
    """A neural spline flow (rational-quadratic spline couplings), optionally conditional.

    ``n_couplings`` :class:`~jflows.bijectors.SplineCoupling` layers on alternating halves of
    the last axis (parity 0, 1, 0, ...): the features of a vector ``(d,)`` with an MLP
    conditioner of widths ``hidden``, or the channels of an image ``(H, W, C)`` with a
    ``ConvNet(hidden)`` conditioner (3x3-1x1-3x3). Images are squeezed first (space-to-depth
    by 2, so the channel split also mixes neighbouring pixels, and single-channel images have
    4 channels to split) and unsqueezed at the end, so ``z`` has the image's shape. Each
    element's spline has ``num_bins`` bins on ``[-bound, bound]`` and identity tails, and
    starts as the identity (zero-initialised conditioners). The pairs of couplings are stacked
    with ``nn.scan``. For vectors of more than two features every pair ends with one fixed
    random permutation of the features (the same in every pair, so the pairs stay identical
    and scanned): with halves alone, features in the same half never condition each other's
    transforms. A run's standardisation puts vector data mostly inside ``[-3, 3]``, the
    default interval.

    Args:
        event_shape: ``(d,)`` with ``d >= 2``, or ``(H, W, C)`` with even ``H`` and ``W``.
        n_couplings: number of couplings (even).
        hidden: MLP widths for vectors (a tuple), or the conditioners' channels for images (an
            int; a tuple's first entry is used).
        num_bins: bins ``K`` of every spline (``3K - 1`` conditioner outputs per element).
        bound: half-width ``B`` of the splines' interval ``[-B, B]``.
        actnorm: put an ActNorm before every coupling.
        unroll: coupling pairs per iteration of the ``nn.scan`` loop (``True``: all of them);
            pass 1 for very deep stacks.
        preprocessing: bijectors applied first (see ``jflows.models.preprocessing``).
        base: ``"standard"`` normal or learned ``"diagonal"`` Gaussian.
        training: accepted for a uniform factory signature (unused: the log-det is exact).
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``JAX_ENABLE_X64=1``).
        context_shape: shape of one context (e.g. ``(k,)``) for a conditional flow
            ``p(x | c)``: every conditioner also sees the context. Then pass ``context=...`` to
            ``log_prob`` and ``sample``. None: unconditional.
        permutation: ``"random"``: a fixed random permutation of the features (numpy seed
            0) after every coupling pair, for vectors of more than two features;
            ``"none"``: halves only.

    Returns:
        A :class:`~jflows.models.Flow`.

    Raises:
        ConfigError: for one-dimensional vectors (nothing to split), images of odd height or
            width, an odd ``n_couplings``, or bad ``num_bins`` / ``bound``.

    Example:
        >>> x = jax.random.normal(key, (8, 2))
        >>> flow = nsf((2,), n_couplings=2, hidden=(8,), num_bins=4)
        >>> variables = flow.init(key, x)
        >>> flow.apply(variables, x, method="log_prob").shape
        (8,)
        >>> conditional = nsf((2,), n_couplings=2, hidden=(8,), context_shape=(1,))
        >>> c = jnp.linspace(-1.0, 1.0, 8)[:, None]
        >>> variables = conditional.init(key, x, c, method="log_prob")
        >>> conditional.apply(variables, x, c, method="log_prob").shape
        (8,)
    """
    kind = event_kind(event_shape)
    dtype = model_dtype(dtype, "nsf")
    if isinstance(n_couplings, bool) or not isinstance(n_couplings, int) or n_couplings < 2 or (
        n_couplings % 2
    ):
        raise ConfigError(f"nsf: n_couplings must be a positive even number, got {n_couplings!r}")
    check_spline_settings(num_bins, bound, "nsf")
    if permutation not in ("random", "none"):
        raise ConfigError(f"nsf: permutation must be 'random' or 'none', got {permutation!r}")
    permute = None
    if kind == "vector":
        require_two_dims("nsf", event_shape)
        widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        event_ndims = 1
        d = int(event_shape[-1])
        if permutation == "random" and d > 2:
            permute = Permute.random(d, seed=0).permutation
    else:
        h, w, _ = (int(s) for s in event_shape)
        if h % 2 or w % 2:
            raise ConfigError(
                f"nsf squeezes images (space-to-depth by 2), so H and W must be even, got "
                f"event_shape {tuple(event_shape)}; crop or pad the images"
            )
        widths = hidden if isinstance(hidden, int) else int(tuple(hidden)[0])
        event_ndims = 3
    make = functools.partial(
        _spline_pair, event_ndims, widths, num_bins, float(bound), actnorm, dtype,
        context_shape is not None, permute,
    )
    layers: list[Bijector] = [Stack(make, length=n_couplings // 2, unroll=unroll)]
    if kind == "image":
        layers = [Squeeze(), *layers, Inverse(Squeeze())]
    return assemble_flow(event_shape, layers, preprocessing, base, dtype, context_shape)
