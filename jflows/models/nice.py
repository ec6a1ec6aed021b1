"""NICE (Dinh, Krueger & Bengio, 2014): additive couplings and a diagonal scaling layer."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import (
    MLP,
    Bijector,
    Chain,
    ElementwiseAffine,
    Inverse,
    Reshape,
    SplitCoupling,
    Stack,
)
from jflows.errors import ConfigError
from jflows.models.common import assemble_flow, event_kind, model_dtype, require_two_dims
from jflows.models.flow import Flow


def _additive_pair(hidden: Sequence[int], dtype: str) -> Bijector:
    return Chain(
        [
            SplitCoupling(
                event_ndims=1,
                parity=p,
                conditioner=MLP(tuple(hidden), param_dtype=dtype),
                scale_map="none",
            )
            for p in (0, 1)
        ]
    )


def nice(
    event_shape: Sequence[int],
    *,
    n_couplings: int = 4,
    hidden: tuple[int, ...] = (256, 256, 256),
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    base: Literal["standard", "diagonal"] = "standard",
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    """A NICE flow: additive couplings, then a learned diagonal scaling.

    ``n_couplings`` additive couplings on alternating halves, then ``z = x e^{s}`` (log-det
    ``sum s``), the only volume change.

    Images are flattened to vectors for the couplings and reshaped back at the end, as in the
    paper (fully connected coupling networks), so ``z`` has the data's shape.

    Args:
        event_shape: ``(d,)`` or ``(H, W, C)``.
        n_couplings: number of additive couplings (even).
        hidden: widths of each coupling's MLP.
        unroll: coupling pairs per iteration of the ``nn.scan`` loop (``True``: all; dense
            layers inside a compiled loop run slower on CPU, see :func:`jflows.models.realnvp`).
        preprocessing: bijectors applied first.
        base: ``"standard"`` or ``"diagonal"``.
        training: training or evaluation mode; accepted for a uniform factory signature
            (coupling flows have no mode-dependent estimators, so it is unused).
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``JAX_ENABLE_X64=1``): the
            dtype of every parameter, base draw and computation (see :class:`Flow`).

    Returns:
        A :class:`~jflows.models.Flow`.

    Raises:
        ConfigError: for one-dimensional events (the couplings need two halves).
    """
    kind = event_kind(event_shape)
    dtype = model_dtype(dtype, "nice")
    if n_couplings < 2 or n_couplings % 2:
        raise ConfigError(f"n_couplings must be a positive even number, got {n_couplings}")
    shape = tuple(int(s) for s in event_shape)
    dims = math.prod(shape)
    require_two_dims("nice", (dims,))
    core: list[Bijector] = [
        Stack(
            functools.partial(_additive_pair, tuple(hidden), dtype),
            length=n_couplings // 2,
            unroll=unroll,
        ),
        ElementwiseAffine(event_ndims=1, use_shift=False, param_dtype=dtype),
    ]
    if kind == "image":
        flatten = Reshape(shape, (dims,))
        core = [flatten, *core, Inverse(Reshape(shape, (dims,)))]
    return assemble_flow(shape, core, preprocessing, base, dtype)
