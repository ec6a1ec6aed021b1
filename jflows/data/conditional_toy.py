r"""A built-in conditional density: 2-D points ``x`` given a 1-D context ``c`` (generated).

``conditional-ring``: ``c ~ U(-1, 1)`` and, given ``c``, ``x`` is a Gaussian blob on the circle
of radius :data:`RING_RADIUS` at the angle :math:`\theta = \pi c`, long along the circle and thin
across it:

.. math::

    x \mid c \sim \mathcal N\big(R\,u(\theta),\; \sigma_t^2\, v v^\top + \sigma_r^2\, u u^\top\big),
    \quad u = (\cos\theta, \sin\theta),\; v = (-\sin\theta, \cos\theta),

with :math:`\sigma_r` = :data:`RING_RADIAL_STD` and :math:`\sigma_t` =
:data:`RING_TANGENTIAL_STD`. Over ``c`` the points fill a ring, so an unconditional model must
spread its mass around the whole circle while a conditional one can put it on the blob; the
exact conditional log density (:func:`conditional_ring_log_prob`) and mean
(:func:`conditional_ring_mean`) say which conditional a sampler draws from. Its conditional
differential entropy, the best possible test NLL given ``c``, is
:math:`\log(2\pi\sigma_r\sigma_t) + 1` (:func:`conditional_ring_entropy`).

Example:
    >>> x, c = sample_conditional_toy("conditional-ring", 1000, seed=0)
    >>> x.shape, c.shape, x.dtype
    ((1000, 2), (1000, 1), dtype('float32'))
    >>> bool(np.all(np.abs(c) <= 1))
    True
"""

from __future__ import annotations

import math

import numpy as np

from jflows.errors import DataError

RING_RADIUS = 2.0
"""Radius of the circle the blob moves on."""

RING_RADIAL_STD = 0.1
"""Standard deviation across the circle."""

RING_TANGENTIAL_STD = 0.4
"""Standard deviation along the circle."""

CONDITIONAL_TOYS: tuple[str, ...] = ("conditional-ring",)
"""Names of the built-in conditional densities (``--data`` names that bring their context)."""


def _check(name: str) -> None:
    if name not in CONDITIONAL_TOYS:
        raise DataError(
            f"unknown conditional density {name!r}; valid names are {', '.join(CONDITIONAL_TOYS)}"
        )


def _frame(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit vectors ``u`` (radial) and ``v`` (tangential) at angle ``pi c``, ``(n, 2)`` each."""
    theta = math.pi * np.asarray(c, np.float64).reshape(-1)
    u = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    v = np.stack([-np.sin(theta), np.cos(theta)], axis=1)
    return u, v


def sample_conditional_given(
    name: str, c: np.ndarray, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """One draw of ``x | c`` per row of ``c`` (shape ``(n,)`` or ``(n, 1)``), float32 ``(n, 2)``.

    Example:
        >>> sample_conditional_given("conditional-ring", np.zeros((3, 1)), seed=1).shape
        (3, 2)
    """
    _check(name)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    u, v = _frame(c)
    noise = rng.standard_normal((len(u), 2))
    x = (RING_RADIUS + RING_RADIAL_STD * noise[:, :1]) * u + RING_TANGENTIAL_STD * noise[:, 1:] * v
    return x.astype(np.float32)


def sample_conditional_toy(
    name: str, n: int, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs ``(x, c)``: float32 ``(n, 2)`` points and ``(n, 1)`` contexts in ``[-1, 1)``.

    A pure function of its arguments (a ``numpy.random.Generator`` from ``seed``).

    Raises:
        DataError: an unknown name or a bad ``n``.
    """
    _check(name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive integer, got {n!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    c = rng.uniform(-1.0, 1.0, size=(n, 1))
    return sample_conditional_given(name, c, rng), c.astype(np.float32)


def conditional_ring_mean(c: np.ndarray) -> np.ndarray:
    """``E[x | c] = R (cos pi c, sin pi c)``, shape ``(n, 2)``.

    Example:
        >>> conditional_ring_mean(np.array([0.0, 0.5])).round(6).tolist()
        [[2.0, 0.0], [0.0, 2.0]]
    """
    u, _ = _frame(c)
    return RING_RADIUS * u


def conditional_ring_log_prob(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The exact ``log p(x | c)`` (nats) of ``conditional-ring``, shape ``(n,)``.

    Example:
        >>> x = conditional_ring_mean(np.array([0.3]))
        >>> float(conditional_ring_log_prob(x, np.array([0.3]))[0]) == -math.log(
        ...     2 * math.pi * RING_RADIAL_STD * RING_TANGENTIAL_STD)
        True
    """
    x = np.asarray(x, np.float64).reshape(-1, 2)
    u, v = _frame(c)
    d = x - RING_RADIUS * u
    r, t = (d * u).sum(1) / RING_RADIAL_STD, (d * v).sum(1) / RING_TANGENTIAL_STD
    return -0.5 * (r**2 + t**2) - math.log(2 * math.pi * RING_RADIAL_STD * RING_TANGENTIAL_STD)


def conditional_ring_entropy() -> float:
    """``H(x | c) = log(2 pi sigma_r sigma_t) + 1`` nats: the lowest achievable test NLL."""
    return math.log(2 * math.pi * RING_RADIAL_STD * RING_TANGENTIAL_STD) + 1.0
