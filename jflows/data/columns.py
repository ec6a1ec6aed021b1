r"""Columns of vector data on which a continuous density is unbounded: constants and lattices.

A flow fitted by maximum likelihood to continuous data can raise its likelihood without limit
on a column that does not have a density:

* a **constant** column (one value in every training row): the standardisation divides by
  the floor :data:`~jflows.data.preprocess.STD_FLOOR` and adds ``-log 1e-6 = 13.8`` nats per
  column to every figure, and a flow could shrink it further;
* a **lattice** column ``x_j = a_j + h_j k`` (integer ``k``: counts, categories coded as
  numbers, values rounded to a few decimals): the density can grow spikes of any height on
  the lattice points, so the training and test NLL fall together and no validation split
  notices.

:func:`constant_columns` and :func:`lattice_columns` find them in the training rows. A lattice
column is modelled properly by *dequantizing* it (``--dequantization uniform``, the
:class:`~jflows.bijectors.LatticeDequantization` layer): ``z_j = x_j + h_j u_j``,
``u_j ~ U[0, 1)``, whose log-likelihood is a lower bound on that of the mixed data (density
of the continuous columns times probability of the lattice ones), since

.. math::

    P(x_j = a_j + h_j k) = \int_0^1 p(a_j + h_j (k + u))\, h_j\, du
    \;\ge\; \exp\big(E_u[\log p(a_j + h_j (k + u))] + \log h_j\big).

Example:
    >>> x = np.array([[0.1, 3.0, 1.0], [0.7, 3.0, 0.0], [0.4, 3.0, 1.0]] * 4)
    >>> constant_columns(x)
    (1,)
    >>> [(c.column, c.offset, c.spacing, c.levels) for c in lattice_columns(x)]
    [(2, 0.0, 1.0, 2)]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jflows.errors import DataError

MIN_REPEATS = 5.0
"""A column is discrete when its values repeat this often on average (rows per distinct value)."""

LATTICE_RTOL = 1e-3
"""Gaps between a column's distinct values within this fraction of a multiple of the smallest."""


class Lattice(NamedTuple):
    """A column whose training values lie on ``offset + spacing * {0, ..., levels - 1}``.

    Attributes:
        column: index of the column.
        offset: its smallest training value ``a``.
        spacing: the lattice step ``h`` (the smallest gap between distinct values).
        levels: lattice points from the smallest to the largest value (``L``).
        distinct: distinct values in the training rows (at most ``levels``).
    """

    column: int
    offset: float
    spacing: float
    levels: int
    distinct: int


class Discrete(NamedTuple):
    """A column with few distinct values that do not lie on one lattice (e.g. 0, 1, 2.5)."""

    column: int
    distinct: int


def _train_matrix(train: np.ndarray) -> np.ndarray:
    x = np.asarray(train, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"expected (N, d) training vectors with N, d >= 1, got shape {x.shape}")
    return x


def constant_columns(train: np.ndarray) -> tuple[int, ...]:
    """Indices of the columns of ``(N, d)`` training vectors that hold one value in every row.

    Example:
        >>> constant_columns(np.array([[0.0, 1.0], [2.0, 1.0]]))
        (1,)
    """
    x = _train_matrix(train)
    return tuple(int(j) for j in np.flatnonzero((x == x[:1]).all(axis=0)))


def _tidy(value: float, single: bool) -> float:
    """``value`` to the 7 (float32 data) or 15 significant digits its storage carries."""
    return float(f"{value:.{7 if single else 15}g}")


def discrete_columns(
    train: np.ndarray, min_repeats: float = MIN_REPEATS
) -> tuple[Lattice | Discrete, ...]:
    """Non-constant columns whose values repeat ``min_repeats`` times or more on average.

    Each is a :class:`Lattice` when the gaps between its sorted distinct values are whole
    multiples of the smallest gap (within :data:`LATTICE_RTOL`, which absorbs float32 storage
    of decimals such as 0.1), else a :class:`Discrete`. For float32 data the offset and spacing
    are rounded to the significant digits of the storage (0.1, not 0.09999990463256836).

    Args:
        train: ``(N, d)`` training vectors.
        min_repeats: rows per distinct value from which a column counts as discrete (5: a
            binary column needs 10 rows, a column of 100 distinct values 500 rows).

    Example:
        >>> x = np.array([[0.0, 0.0], [1.0, 0.5], [2.5, 1.0]] * 5)
        >>> discrete_columns(x)
        (Discrete(column=0, distinct=3), Lattice(column=1, offset=0.0, spacing=0.5, levels=3, distinct=3))
    """  # noqa: E501
    single = np.asarray(train).dtype == np.float32
    x = _train_matrix(train)
    found: list[Lattice | Discrete] = []
    for j in range(x.shape[1]):
        values = np.unique(x[:, j])
        if len(values) < 2 or len(x) / len(values) < min_repeats:
            continue
        gaps = np.diff(values)
        steps = gaps / gaps.min()
        if np.all(np.abs(steps - np.round(steps)) <= LATTICE_RTOL * np.maximum(steps, 1.0)):
            levels = int(round((values[-1] - values[0]) / gaps.min())) + 1
            spacing = _tidy(float(values[-1] - values[0]) / (levels - 1), single)
            offset = _tidy(float(values[0]), single)
            found.append(Lattice(j, offset, spacing, levels, len(values)))
        else:
            found.append(Discrete(j, len(values)))
    return tuple(found)


def lattice_columns(train: np.ndarray, min_repeats: float = MIN_REPEATS) -> tuple[Lattice, ...]:
    """The :class:`Lattice` columns of :func:`discrete_columns` (those dequantization models).

    Example:
        >>> lattice_columns(np.array([[0.0], [2.0], [4.0]] * 5))
        (Lattice(column=0, offset=0.0, spacing=2.0, levels=3, distinct=3),)
    """
    return tuple(c for c in discrete_columns(train, min_repeats) if isinstance(c, Lattice))


def dequantized_stats(
    mean: tuple[float, ...], std: tuple[float, ...], lattice: tuple[Lattice, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    r"""Mean and standard deviation of the columns after ``x_j + h_j u_j``, ``u_j ~ U[0, 1)``.

    .. math:: \mu_j' = \mu_j + h_j / 2, \qquad \sigma_j' = \sqrt{\sigma_j^2 + h_j^2 / 12}

    for the lattice columns (the noise is independent of ``x_j``); the others are unchanged.

    Example:
        >>> dequantized_stats((1.0, 5.0), (2.0, 1.0), (Lattice(1, 4.0, 3.0, 3, 3),))
        ((1.0, 6.5), (2.0, 1.3228756555322954))
    """
    mean, std = list(mean), list(std)
    for c in lattice:
        mean[c.column] += c.spacing / 2
        std[c.column] = float(np.sqrt(std[c.column] ** 2 + c.spacing**2 / 12))
    return tuple(mean), tuple(std)


def off_lattice_rows(
    x: np.ndarray, columns: tuple[int, ...], offsets: tuple[float, ...],
    spacings: tuple[float, ...],
) -> np.ndarray:
    """Indices of the rows of ``x`` with a value off its column's lattice ``a + h Z``.

    A value counts as on the lattice within :data:`LATTICE_RTOL` of the spacing (float32
    storage). Values beyond the training range but on the lattice are fine.

    Example:
        >>> off_lattice_rows(np.array([[0.0, 1.5], [1.0, 2.0]]), (1,), (0.0,), (1.0,))
        array([0])
    """
    x = np.asarray(x, dtype=np.float64)
    if not columns:
        return np.zeros(0, dtype=np.int64)
    steps = (x[:, list(columns)] - np.asarray(offsets)) / np.asarray(spacings)
    off = np.abs(steps - np.round(steps)) > LATTICE_RTOL
    return np.flatnonzero(off.any(axis=1))
