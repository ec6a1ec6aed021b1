"""Helpers shared by the model factories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jflows.bijectors import Bijector, Chain
from jflows.errors import ConfigError
from jflows.models.bases import DiagonalGaussian, StandardNormal
from jflows.models.flow import Flow

BASES = ("standard", "diagonal")
DTYPES = ("float32", "float64")


def model_dtype(dtype: Any, model: str) -> str:
    """The canonical name (``"float32"`` or ``"float64"``) of a factory's ``dtype`` argument.

    Raises ConfigError for any other dtype, and for float64 while 64-bit JAX is off (JAX would
    silently make every array float32).

    Example:
        >>> model_dtype(jnp.float32, "realnvp")
        'float32'
    """
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ConfigError(f"{model}: dtype must be one of {DTYPES}, got {dtype!r}")
    if name == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError(
            f"{model}: dtype='float64' needs 64-bit JAX, which is off (JAX would silently use "
            "float32): set JAX_ENABLE_X64=1 in the environment, or call "
            "jax.config.update('jax_enable_x64', True) before building the model, or use "
            "dtype='float32'"
        )
    return name


def require_two_dims(model: str, event_shape: Sequence[int]) -> None:
    """Coupling flows split an event in two halves, so they need at least 2 scalars per event.

    Raises ConfigError (naming the model and the models that do handle 1-D data) otherwise.
    """
    shape = tuple(int(s) for s in event_shape)
    if len(shape) == 1 and shape[0] < 2:
        raise ConfigError(
            f"{model} needs vectors of at least 2 dimensions (its couplings split every event "
            f"into two halves), got event_shape {shape}; for one-dimensional data use resflow "
            "or iresnet"
        )


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


def require_image_scales(
    model: str,
    event_shape: Sequence[int],
    scales: tuple[str, int],
    depth: tuple[str, int],
    squeezes: int,
    hint: str = "",
) -> tuple[int, int, int]:
    """Checks a multi-scale image model's event shape and sizes; returns ``(H, W, C)``.

    The model squeezes (space-to-depth by 2) ``squeezes`` times, so H and W must be divisible
    by ``2 ** squeezes``; ``scales`` and ``depth`` are ``(argument name, value)`` pairs of its
    number of scales and of layers per scale, both at least 1.

    Raises:
        ConfigError: ``event_shape`` is not ``(H, W, C)`` (the message ends with ``hint``), a
            count is below 1, or H or W is not divisible.

    Example:
        >>> require_image_scales("glow", (8, 8, 1), ("levels", 2), ("steps", 4), squeezes=2)
        (8, 8, 1)
    """
    if event_kind(event_shape) != "image":
        raise ConfigError(
            f"{model} models images (H, W, C), got event_shape {tuple(event_shape)}{hint}"
        )
    h, w, c = (int(s) for s in event_shape)
    (scales_name, n_scales), (depth_name, n_depth) = scales, depth
    div = 2 ** max(squeezes, 0)
    if n_scales < 1 or n_depth < 1 or h % div or w % div:
        raise ConfigError(
            f"{model} with {scales_name}={n_scales} needs H and W divisible by {div} (and "
            f"{depth_name} >= 1), got {h}x{w}, {depth_name}={n_depth}"
        )
    return h, w, c


def assemble_flow(
    event_shape: Sequence[int],
    layers: Sequence[Bijector],
    preprocessing: Sequence[Bijector] = (),
    base: str = "standard",
    dtype: str = "float32",
    context_shape: Sequence[int] | None = None,
    latent_shape: Sequence[int] | None = None,
) -> Flow:
    """``Flow(Chain([*preprocessing, *layers]), base, dtype)`` with ``base`` by name.

    ``latent_shape`` is the base's event shape when the layers change the shape (surjections);
    by default the data's.
    """
    shape = tuple(int(s) for s in event_shape)
    latent = shape if latent_shape is None else tuple(int(s) for s in latent_shape)
    if base == "standard":
        base_module = StandardNormal(latent, dtype=dtype)
    elif base == "diagonal":
        base_module = DiagonalGaussian(latent, dtype=dtype)
    else:
        raise ConfigError(f"unknown base {base!r}; choose one of {BASES}")
    context = None if context_shape is None else tuple(int(s) for s in context_shape)
    return Flow(Chain([*preprocessing, *layers]), base_module, shape, dtype, context)
