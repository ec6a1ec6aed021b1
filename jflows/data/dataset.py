"""One entry point for every data source: ``load_dataset(spec)`` returns a train/test ``Dataset``.

``spec`` is what the ``--data`` option of the CLI takes:

* a toy density name (:data:`jflows.data.TOY_DENSITIES`): a training pool of ``n_train``
  points drawn with ``seed`` (the same array as ``sample_toy(spec, n_train, seed)``) and a test
  set of ``n_test`` points from the child stream
  ``default_rng(SeedSequence(seed, spawn_key=(1,)))``, which is independent of the stream of
  any integer seed, so train and test never share points;
* ``"digits"``: the fixed 1500/297 split of scikit-learn's digits (``seed`` is not used, so every
  run sees the same test set), 17 levels;
* a path ending in ``.npy``: float ``(N, d)`` vectors or uint8 ``(N, H, W, C)`` images, split by
  a permutation from ``numpy.random.default_rng(seed)``; the first ``round(test_fraction N)``
  permuted rows (at least 1, at most ``N - 1``) are the test set.

Example:
    >>> ds = load_dataset("moons", n_train=1000, n_test=100)
    >>> ds.train.shape, ds.test.shape, ds.kind, ds.dims
    ((1000, 2), (100, 2), 'vector', 2)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os

import numpy as np

from jflows.data.arrays import check_levels, load_array, validate_array
from jflows.data.conditional_toy import CONDITIONAL_TOYS, sample_conditional_toy
from jflows.data.context import load_context
from jflows.data.digits import DIGITS_LEVELS, load_digits_split
from jflows.data.toy import TOY_DENSITIES, sample_toy
from jflows.errors import DataError

BUILTIN_DATA: tuple[str, ...] = (*TOY_DENSITIES, "digits", *CONDITIONAL_TOYS)
"""Names accepted by :func:`load_dataset` besides ``.npy`` paths (the conditional toys of
:mod:`jflows.data.conditional_toy` bring their context)."""

_KINDS = ("vector", "image")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair of one kind of data.

    Attributes:
        name: the spec it was loaded from (a built-in name or the path).
        train: training rows, float32 ``(N, d)`` or uint8 ``(N, H, W, C)``.
        test: held-out rows of the same event shape and dtype.
        kind: ``"vector"`` or ``"image"``.
        levels: number of grey levels of images (values ``0..levels-1``); None for vectors.
        event_shape: shape of one row, ``(d,)`` or ``(H, W, C)``.
        train_context: float32 ``(N, k)`` context of each training row (conditional data),
            or None.
        test_context: the test rows' context, or None.

    Instances compare by identity (``eq=False``: arrays have no single truth value) and their
    repr leaves the arrays out.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.is_image, ds.levels, ds.event_shape, ds.dims
        (True, 17, (8, 8, 1), 64)
    """

    name: str
    train: np.ndarray = dataclasses.field(repr=False)
    test: np.ndarray = dataclasses.field(repr=False)
    kind: str
    levels: int | None
    event_shape: tuple[int, ...]
    train_context: np.ndarray | None = dataclasses.field(default=None, repr=False)
    test_context: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise DataError(f"Dataset kind must be one of {_KINDS}, got {self.kind!r}")
        if (self.levels is None) != (self.kind == "vector"):
            raise DataError(
                f"Dataset of kind {self.kind!r} needs levels "
                f"{'None' if self.kind == 'vector' else 'set'}, got {self.levels!r}"
            )
        for split, x in (("train", self.train), ("test", self.test)):
            if tuple(x.shape[1:]) != tuple(self.event_shape):
                raise DataError(
                    f"Dataset {split} rows have shape {x.shape[1:]}, but event_shape is "
                    f"{self.event_shape}"
                )
        contexts = (self.train_context, self.test_context)
        if (contexts[0] is None) != (contexts[1] is None):
            raise DataError("Dataset needs both train_context and test_context, or neither")
        for split, x, c in (("train", self.train, contexts[0]), ("test", self.test, contexts[1])):
            if c is not None and (c.ndim != 2 or len(c) != len(x)):
                raise DataError(
                    f"Dataset {split}_context has shape {c.shape}, expected ({len(x)}, k)"
                )

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        """Shape of one context row, ``(k,)``; None for unconditional data."""
        return None if self.train_context is None else tuple(self.train_context.shape[1:])

    @property
    def is_image(self) -> bool:
        """True for uint8 image data."""
        return self.kind == "image"

    @property
    def dims(self) -> int:
        """Scalars per event, ``D = prod(event_shape)`` (the ``D`` of bits/dim)."""
        return math.prod(self.event_shape)


def _make(
    name: str, train: np.ndarray, test: np.ndarray, levels: int | None, contexts=(None, None)
) -> Dataset:
    kind = "image" if train.ndim == 4 else "vector"
    level = levels if kind == "image" else None
    return Dataset(name, train, test, kind, level, train.shape[1:], *contexts)


def _unknown(spec: str) -> DataError:
    close = difflib.get_close_matches(spec, BUILTIN_DATA, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if os.path.isfile(spec):
        hint = " (that file exists, but only .npy files written by numpy.save are read)"
    return DataError(
        f"unknown data {spec!r}{hint}; use a built-in name ({', '.join(BUILTIN_DATA)}) or the "
        f"path of a .npy file (the path must end in .npy)"
    )


def _split_rows(x: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return x[perm[n_test:]], x[perm[:n_test]]


def _check_toy_args(spec: str, levels, n_train, n_test) -> None:
    if levels is not None:
        raise DataError(
            f"levels={levels!r} was given, but {spec!r} is continuous 2-D data; --levels "
            f"only applies to uint8 images"
        )
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{arg} must be a positive integer, got {value!r}")


def load_dataset(
    spec: str | os.PathLike,
    *,
    levels: int | None = None,
    n_train: int = 100_000,
    n_test: int = 5_000,
    seed: int = 0,
    test_fraction: float = 0.1,
    context: str | os.PathLike | None = None,
) -> Dataset:
    """Load a built-in data set or a ``.npy`` file as a train/test :class:`Dataset`.

    Args:
        spec: a name in :data:`BUILTIN_DATA` or a path ending in ``.npy``.
        levels: grey levels of image data (default 17 for ``digits``, 256 for ``.npy`` images);
            the data's largest value must be below it. Must stay None for vector data.
        n_train: size of a toy density's training pool.
        n_test: size of a toy density's test set.
        seed: seed of the toy samples or of the ``.npy`` train/test permutation.
        test_fraction: fraction of a ``.npy`` file's rows held out for testing, in (0, 1).
        context: a ``.npy`` of one float context row per row of a ``.npy`` data file
            (:mod:`jflows.data.context`), split with the same permutation; a conditional
            built-in (``conditional-ring``) brings its own and takes none.

    Returns:
        The :class:`Dataset`.

    Raises:
        DataError: unknown names, unreadable or invalid files, bad arguments.

    Example:
        >>> load_dataset("8gaussians", n_train=500, seed=3).train.shape
        (500, 2)
    """
    spec = os.fspath(spec)
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    if context is not None and not spec.endswith(".npy"):
        own = " (it brings its own context)" if spec in CONDITIONAL_TOYS else ""
        raise DataError(
            f"--context {os.fspath(context)!r} needs --data to be a .npy file with one row per "
            f"context row, but --data is {spec!r}{own}; pass --data x.npy, or drop --context"
        )
    if spec in TOY_DENSITIES:
        _check_toy_args(spec, levels, n_train, n_test)
        test_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        train, test = sample_toy(spec, n_train, seed), sample_toy(spec, n_test, test_rng)
        return _make(spec, train, test, None)
    if spec in CONDITIONAL_TOYS:
        _check_toy_args(spec, levels, n_train, n_test)
        test_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        (train, train_c), (test, test_c) = (
            sample_conditional_toy(spec, n_train, seed),
            sample_conditional_toy(spec, n_test, test_rng),
        )
        return _make(spec, train, test, None, (train_c, test_c))
    if spec == "digits":
        levels = DIGITS_LEVELS if levels is None else check_levels(levels)
        train, test = load_digits_split()
        for split in (train, test):
            validate_array(split, levels=levels, source="digits")
        return _make(spec, train, test, levels)
    if spec.endswith(".npy"):
        x = load_array(spec, levels=256 if levels is None else levels)
        if x.ndim == 2 and levels is not None:
            raise DataError(
                f"levels={levels!r} was given, but {spec!r} holds float vectors; --levels only "
                f"applies to uint8 images"
            )
        train, test = _split_rows(x, seed, test_fraction)
        contexts = (None, None)
        if context is not None:
            contexts = _split_rows(load_context(context, len(x), spec), seed, test_fraction)
        return _make(spec, train, test, 256 if levels is None else levels, contexts)
    raise _unknown(spec)
