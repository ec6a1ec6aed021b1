"""Helpers shared by the model factories."""

from __future__ import annotations

from collections.abc import Sequence

from jflows.bijectors import Bijector, Chain
from jflows.errors import ConfigError
from jflows.models.bases import DiagonalGaussian, StandardNormal
from jflows.models.flow import Flow

BASES = ("standard", "diagonal")


def event_kind(event_shape: Sequence[int]) -> str:
    """``"vector"`` for ``(d,)``, ``"image"`` for ``(H, W, C)``; anything else is an error."""
    shape = tuple(int(s) for s in event_shape)
    if len(shape) == 1 and shape[0] >= 1:
        return "vector"
    if len(shape) == 3 and min(shape) >= 1:
        return "image"
    raise ConfigError(
        f"event_shape must be (d,) for vectors or (H, W, C) for channels-last images, "
        f"got {tuple(event_shape)}"
    )


def assemble_flow(
    event_shape: Sequence[int],
    layers: Sequence[Bijector],
    preprocessing: Sequence[Bijector] = (),
    base: str = "standard",
) -> Flow:
    """``Flow(Chain([*preprocessing, *layers]), base)`` with ``base`` by name."""
    shape = tuple(int(s) for s in event_shape)
    if base == "standard":
        base_module = StandardNormal(shape)
    elif base == "diagonal":
        base_module = DiagonalGaussian(shape)
    else:
        raise ConfigError(f"unknown base {base!r}; choose one of {BASES}")
    return Flow(Chain([*preprocessing, *layers]), base_module, shape)
