"""Pre-processing bijectors that make a model's density refer to the data as the user gave it.

Whatever a run does to its data before the flow proper (standardising vectors, scaling
dequantized images to [0, 1), the logit transform) is a bijector at the front of the model,
with its log-determinant counted. An NLL is then always in the units of the raw data, and the
same model applied to new data applies the same pre-processing.
"""

from __future__ import annotations

from collections.abc import Sequence

from jflows.bijectors import (
    FixedAffine,
    Layer,
    Logit,
    UniformDequantization,
    VariationalDequantization,
)
from jflows.errors import ConfigError


def vector_preprocessing(mean: Sequence[float], std: Sequence[float]) -> list[Layer]:
    """Standardisation ``z = (x - mean) / std`` (log-det ``-sum log std``).

    Example:
        >>> pre = vector_preprocessing(mean=(0.0, 1.0), std=(2.0, 2.0))
    """
    if any(s <= 0 for s in std):
        raise ConfigError(f"standard deviations must be positive, got {tuple(std)}")
    return [
        FixedAffine(
            shift=tuple(-float(m) for m in mean),
            scale=tuple(1.0 / float(s) for s in std),
            event_ndims=1,
        )
    ]


DEQUANTIZATIONS = ("uniform", "variational")


def image_preprocessing(
    levels: int, logit_alpha: float | None = None, dequantization: str = "uniform"
) -> list[Layer]:
    """Dequantization, scaling to ``[0, 1)``, then an optional logit transform.

    The model takes the integer levels ``k`` themselves: the first layer draws
    ``x = k + u`` with ``u ~ U[0, 1)`` (``dequantization="uniform"``,
    :class:`~jflows.bijectors.UniformDequantization`) or ``u ~ q(u | k)`` from a learned
    conditional flow (``"variational"``, Flow++'s
    :class:`~jflows.bijectors.VariationalDequantization`, contribution ``-log q(u | k)``);
    either is a stochastic layer (stream ``dequant``), so ``log_prob`` is a lower bound and
    its figures are labelled ``..._bound``. ``x`` lies in ``[0, levels)``. The scaling contributes
    ``-D log(levels)`` to the log-density, so the model's NLL is the (dequantized) NLL of the
    integer data, and bits/dim is ``NLL / (D ln 2)``.

    Example:
        >>> [type(layer).__name__ for layer in image_preprocessing(256, logit_alpha=0.05)]
        ['UniformDequantization', 'FixedAffine', 'Logit']
    """
    if levels < 2:
        raise ConfigError(f"images need at least 2 levels, got {levels}")
    if dequantization not in DEQUANTIZATIONS:
        raise ConfigError(
            f"dequantization must be one of {DEQUANTIZATIONS}, got {dequantization!r}"
        )
    if dequantization == "variational":
        dequantizer: Layer = VariationalDequantization(levels=levels)
    else:
        dequantizer = UniformDequantization(event_ndims=3, levels=levels)
    layers: list[Layer] = [
        dequantizer,
        FixedAffine(scale=1.0 / levels, event_ndims=3),
    ]
    if logit_alpha is not None:
        if not 0.0 < logit_alpha < 0.5:
            raise ConfigError(f"logit_alpha must be in (0, 0.5), got {logit_alpha}")
        layers.append(Logit(alpha=logit_alpha, event_ndims=3))
    return layers
