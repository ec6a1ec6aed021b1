"""The eight toy 2-D densities of the FFJORD / Residual Flows benchmarks, and a symmetric one.

All are seeded and exact-size. ``reflected-moons`` (two moons reflected into all four
quadrants) is symmetric under every coordinate flip: the test case of the absolute-value
surjection.

The recipes are those of the Residual Flows code (``resflows/toy_data.py``, spec section 7), with
three deliberate differences:

* Randomness comes from a ``numpy.random.Generator`` built from the caller's seed (sklearn
  generators get an integer seed drawn from it), never from numpy's global state, so
  ``sample_toy(name, n, seed)`` is a pure function of its arguments. Samples match the reference
  in distribution, not point for point.
* ``pinwheel`` and ``2spirals`` build whole arms (5 and 2 of them), so the reference returns
  ``5 (n // 5)`` or ``2 (n // 2)`` points. Here the recipe runs with ``ceil(n / arms)`` points per
  arm, shuffles the rows and keeps the first ``n``: exactly ``n`` points, each an exchangeable
  draw, with arm counts that differ by at most the rounding.
* ``2spirals`` has no shuffle in the reference (first half one spiral, second half the other); its
  rows are shuffled here so that any prefix of the array is a fair sample.

Unknown names raise :class:`jflows.errors.DataError` (the reference silently falls back to
8gaussians).

Example:
    >>> x = sample_toy("moons", 1000, seed=0)
    >>> x.shape, x.dtype
    ((1000, 2), dtype('float32'))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from jflows.errors import DataError

EIGHT_GAUSSIANS_SCALE = 1.414
"""Divisor applied to the 8gaussians mixture (the reference's rounded sqrt(2))."""

EIGHT_GAUSSIANS_CENTERS = (
    np.array(
        [
            [4.0 * math.cos(t), 4.0 * math.sin(t)]
            for t in np.deg2rad([0.0, 180.0, 90.0, 270.0, 45.0, -45.0, 135.0, -135.0])
        ]
    )
    / EIGHT_GAUSSIANS_SCALE
)
"""The eight mixture centres after scaling, ``4 (cos t, sin t) / 1.414``, shape ``(8, 2)``."""

EIGHT_GAUSSIANS_STD = 0.5 / EIGHT_GAUSSIANS_SCALE
"""Per-coordinate standard deviation of each 8gaussians component after scaling."""


def _datasets():
    """``sklearn.datasets``, imported on first use (importing sklearn costs ~1 s and ~70 MB)."""
    from sklearn import datasets

    return datasets


def _sklearn_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**32))


def _swissroll(rng: np.random.Generator, n: int) -> np.ndarray:
    x = _datasets().make_swiss_roll(n, noise=1.0, random_state=_sklearn_seed(rng))[0]
    return x[:, [0, 2]] / 5.0


def _circles(rng: np.random.Generator, n: int) -> np.ndarray:
    x = _datasets().make_circles(n, factor=0.5, noise=0.08, random_state=_sklearn_seed(rng))[0]
    return x * 3.0


def _rings(rng: np.random.Generator, n: int) -> np.ndarray:
    quarter = n // 4
    counts = (quarter, quarter, quarter, n - 3 * quarter)
    parts = []
    for radius, count in zip((1.0, 0.75, 0.5, 0.25), counts):
        angle = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
        parts.append(radius * np.stack([np.cos(angle), np.sin(angle)], axis=1))
    x = np.concatenate(parts) * 3.0
    x = x[rng.permutation(n)]
    return x + rng.normal(scale=0.08, size=x.shape)


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    x = _datasets().make_moons(n, noise=0.1, random_state=_sklearn_seed(rng))[0]
    return x * 2.0 + np.array([-1.0, -0.2])


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = EIGHT_GAUSSIANS_CENTERS * EIGHT_GAUSSIANS_SCALE
    x = rng.normal(size=(n, 2)) * 0.5 + centres[rng.integers(8, size=n)]
    return x / EIGHT_GAUSSIANS_SCALE


def _pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    arms, per_arm, rate = 5, -(-n // 5), 0.25
    f = rng.normal(size=(arms * per_arm, 2)) * np.array([0.3, 0.1])
    f[:, 0] += 1.0
    arm = np.repeat(np.arange(arms), per_arm)
    a = 2.0 * np.pi * arm / arms + rate * np.exp(f[:, 0])
    cos, sin = np.cos(a), np.sin(a)
    # Row vector f times [[cos, -sin], [sin, cos]].
    x = 2.0 * np.stack([f[:, 0] * cos + f[:, 1] * sin, -f[:, 0] * sin + f[:, 1] * cos], axis=1)
    return x[rng.permutation(len(x))][:n]


def _two_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    half = -(-n // 2)
    t = np.sqrt(rng.random((half, 1))) * 540.0 * (2.0 * np.pi) / 360.0
    dx = -np.cos(t) * t + rng.random((half, 1)) * 0.5
    dy = np.sin(t) * t + rng.random((half, 1)) * 0.5
    d = np.concatenate([dx, dy], axis=1)
    x = np.concatenate([d, -d]) / 3.0
    x = x + rng.normal(size=x.shape) * 0.1
    return x[rng.permutation(len(x))][:n]


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    x1 = rng.random(n) * 4.0 - 2.0
    x2 = rng.random(n) - rng.integers(0, 2, size=n) * 2.0 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) * 2.0


def _reflected_moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two moons in the positive quadrant, each coordinate's sign then flipped at random.

    Eight moons: a density with ``p(x) = p(|x|)`` under every coordinate flip.
    """
    x = _datasets().make_moons(n, noise=0.1, random_state=_sklearn_seed(rng))[0]
    x = (x + np.array([1.3, 0.8])) * 1.2
    return x * rng.choice(np.array([-1.0, 1.0]), size=x.shape)


_GENERATORS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "moons": _moons,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "rings": _rings,
    "circles": _circles,
    "swissroll": _swissroll,
    "reflected-moons": _reflected_moons,
}

TOY_DENSITIES: tuple[str, ...] = tuple(_GENERATORS)
"""Names accepted by :func:`sample_toy`."""


def sample_toy(name: str, n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Draw ``n`` points from the toy 2-D density ``name``.

    Args:
        name: one of :data:`TOY_DENSITIES` (``moons``, ``8gaussians``, ``checkerboard``,
            ``pinwheel``, ``2spirals``, ``rings``, ``circles``, ``swissroll``).
        n: number of points, at least 1.
        seed: an integer seed (the same ``(name, n, seed)`` always gives the same array) or a
            ``numpy.random.Generator``, which is advanced.

    Returns:
        A float32 array of shape ``(n, 2)``.

    Raises:
        DataError: for an unknown name or ``n < 1``.

    Example:
        >>> sample_toy("checkerboard", 3, seed=1).shape
        (3, 2)
    """
    if name not in _GENERATORS:
        raise DataError(f"unknown toy density {name!r}; valid names are {', '.join(TOY_DENSITIES)}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"the number of toy points must be a positive integer, got {n!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x = _GENERATORS[name](rng, int(n))
    return np.ascontiguousarray(x, dtype=np.float32)


def eight_gaussians_log_prob(x: np.ndarray) -> np.ndarray:
    r"""Exact log-density of the 8gaussians mixture, in float64.

    .. math::

        p(x) = \frac{1}{8} \sum_{k=1}^{8} \mathcal{N}(x; \mu_k, \sigma^2 I_2),
        \quad \mu_k = \frac{4 (\cos\theta_k, \sin\theta_k)}{1.414},
        \quad \sigma = \frac{0.5}{1.414},

    evaluated with a log-sum-exp. Its entropy is about 2.833 nats, the best NLL a model of this
    data can reach.

    Args:
        x: points of shape ``(..., 2)``.

    Returns:
        ``log p(x)`` with shape ``x.shape[:-1]``.

    Example:
        >>> round(float(eight_gaussians_log_prob(EIGHT_GAUSSIANS_CENTERS[0])), 3)
        -1.838
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1:] != (2,):
        raise DataError(f"8gaussians points must have a last axis of size 2, got shape {x.shape}")
    var = EIGHT_GAUSSIANS_STD**2
    sq = np.sum((x[..., None, :] - EIGHT_GAUSSIANS_CENTERS) ** 2, axis=-1)
    log_comp = -0.5 * sq / var - math.log(2.0 * math.pi * var) - math.log(8.0)
    top = np.max(log_comp, axis=-1)
    return top + np.log(np.sum(np.exp(log_comp - top[..., None]), axis=-1))
