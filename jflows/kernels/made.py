r"""Degrees and masks of MADE (Germain, Gregor, Murray & Larochelle, 2015).

Every unit of a masked network gets a **degree**. The ``D`` inputs get the degrees
``1, ..., D`` in a chosen order (``order[i]`` is the degree of input ``i``); each hidden unit
gets a degree ``m`` in ``[1, D - 1]``, or in ``[0, D - 1]`` for a conditional network (units of
degree 0 see no input, only the context and their bias, so that the first output too is a
nonlinear function of the context); every output belongs to one input position and carries
that position's degree. The connections allowed are

.. math::
    \text{input or hidden } j \to \text{hidden } k \iff m(k) \ge m(j), \qquad
    \text{hidden (or input) } j \to \text{output } d \iff m(d) > m(j),

so, by induction over the layers, the output of degree ``m`` depends only on the inputs of
degree ``< m``: the network is autoregressive in ``order``. Everything here is numpy (the masks
are constants of the network's shape), so it can be evaluated at trace time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jflows.errors import ConfigError

HIDDEN_DEGREES = ("cycle", "random")
"""How hidden degrees are assigned: cycling through ``[1, D - 1]`` or drawn with a seed."""


def input_degrees(dim: int, order: Sequence[int] | str | None = None) -> np.ndarray:
    """The degrees ``1..D`` of the ``D`` inputs.

    Args:
        dim: number of inputs ``D >= 1``.
        order: None or ``"natural"`` (input ``i`` has degree ``i + 1``), ``"reverse"``
            (degree ``D - i``) or a permutation of ``range(D)`` listing the inputs from the
            first to the last in the autoregressive order.

    Example:
        >>> input_degrees(3, "reverse").tolist(), input_degrees(3, (2, 0, 1)).tolist()
        ([3, 2, 1], [2, 3, 1])
    """
    if dim < 1:
        raise ConfigError(f"MADE needs at least one input, got dim={dim}")
    if order is None or order == "natural":
        return np.arange(1, dim + 1)
    if order == "reverse":
        return np.arange(dim, 0, -1)
    perm = np.asarray(order)
    if isinstance(order, str) or sorted(perm.tolist()) != list(range(dim)):
        raise ConfigError(
            f"MADE order must be 'natural', 'reverse' or a permutation of range({dim}), "
            f"got {order!r}"
        )
    degrees = np.empty(dim, dtype=int)
    degrees[perm] = np.arange(1, dim + 1)
    return degrees


def hidden_degrees(
    dim: int, widths: Sequence[int], mode: str = "cycle", seed: int = 0, min_degree: int = 1
) -> list[np.ndarray]:
    """Degrees of the units of every hidden layer, in ``[min_degree, D - 1]``.

    ``"cycle"`` gives unit ``k`` the degree ``min_degree + k mod (D - min_degree)``, so every
    degree appears (as soon as a layer is wide enough); ``"random"`` draws each layer's degrees
    uniformly from ``[min of the previous layer, D - 1]`` with numpy's generator seeded by
    ``seed``, as in the paper. ``min_degree`` is 1, or 0 for a conditional network (see the
    module docstring). With ``D = 1`` every hidden degree is 0.

    Example:
        >>> [d.tolist() for d in hidden_degrees(3, (4, 2))]
        [[1, 2, 1, 2], [1, 2]]
        >>> [d.tolist() for d in hidden_degrees(3, (4,), min_degree=0)]
        [[0, 1, 2, 0]]
    """
    if mode not in HIDDEN_DEGREES:
        raise ConfigError(f"unknown hidden degree mode {mode!r}; choose one of {HIDDEN_DEGREES}")
    low = min(int(min_degree), dim - 1)
    rng = np.random.default_rng(seed)
    out = []
    for width in widths:
        if mode == "cycle":
            degrees = low + np.arange(width) % (dim - low)
        else:
            degrees = rng.integers(low, dim, size=width)  # upper bound excluded: <= D - 1
            low = int(degrees.min()) if width else low
        out.append(degrees)
    return out


def made_masks(
    in_degrees: np.ndarray, hidden: Sequence[np.ndarray], per_output: int
) -> list[np.ndarray]:
    """The 0/1 masks ``(fan_in, fan_out)`` of every dense layer of a MADE, first to last.

    The last mask has ``D * per_output`` columns: column ``d * per_output + p`` is output
    ``p`` of input position ``d``, with degree ``in_degrees[d]``.

    Example:
        >>> masks = made_masks(np.array([1, 2]), [np.array([1, 1])], per_output=1)
        >>> [m.tolist() for m in masks]
        [[[1.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]
    """
    degrees = [np.asarray(in_degrees), *(np.asarray(h) for h in hidden)]
    masks = [
        (later[None, :] >= earlier[:, None]).astype(np.float64)
        for earlier, later in zip(degrees[:-1], degrees[1:])
    ]
    out_degrees = np.repeat(np.asarray(in_degrees), per_output)
    masks.append((out_degrees[None, :] > degrees[-1][:, None]).astype(np.float64))
    return masks
