"""Statistics of the training data that pre-processing bijectors are built from.

Only the numbers live here; the bijectors that apply them (with their log-determinants, so an
NLL stays in the units of the data as given) live in ``jflows.bijectors``. Statistics are plain
Python floats so that they can be stored as static module attributes and written to JSON.
"""

from __future__ import annotations

import numpy as np

from jflows.errors import DataError

STD_FLOOR = 1e-6
"""Smallest standard deviation returned, so that a constant column cannot divide by zero."""


def vector_stats(train: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    r"""Per-dimension mean and standard deviation of ``(N, d)`` training vectors.

    .. math::

        \mu_j = \frac{1}{N} \sum_i x_{ij}, \qquad
        \sigma_j = \max\Big(\sqrt{\tfrac{1}{N} \textstyle\sum_i (x_{ij} - \mu_j)^2},
        10^{-6}\Big)

    (the population standard deviation, ``ddof=0``), computed in float64.

    Args:
        train: float array of shape ``(N, d)`` with ``N >= 1``.

    Returns:
        ``(mean, std)``, two tuples of ``d`` Python floats.

    Raises:
        DataError: if ``train`` is not a non-empty 2-D array.

    Example:
        >>> vector_stats(np.array([[0.0, 1.0], [2.0, 1.0]]))
        ((1.0, 1.0), (1.0, 1e-06))
    """
    x = np.asarray(train, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(
            f"vector_stats needs (N, d) training vectors with N, d >= 1, got shape {x.shape}"
        )
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), STD_FLOOR)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
