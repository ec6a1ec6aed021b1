"""scikit-learn's 8x8 handwritten digits as uint8 images, with the fixed W3 train/test split.

``sklearn.datasets.load_digits`` ships 1797 grey-scale images of 8x8 pixels whose values are the
integers 0..16 (17 levels; sklearn bundles the file, so nothing is downloaded). The benchmark
workload W3 (docs/design.md, "Benchmark workloads") splits them with one fixed permutation,
``numpy.random.default_rng(0).permutation(1797)``: the first 1500 indices train, the other 297
test. The split does not depend on any run seed.

Example:
    >>> train, test = load_digits_split()
    >>> train.shape, test.shape, train.dtype
    ((1500, 8, 8, 1), (297, 8, 8, 1), dtype('uint8'))
"""

from __future__ import annotations

import functools

import numpy as np

from jflows.errors import DataError

DIGITS_LEVELS = 17
"""Number of grey levels of the digits (values 0..16)."""

DIGITS_N_TRAIN = 1500
"""Training images in the fixed split."""

DIGITS_N_TEST = 297
"""Test images in the fixed split."""

DIGITS_SPLIT_SEED = 0
"""Seed of ``numpy.random.default_rng`` whose permutation defines the split."""


def _sklearn_digits():
    """``sklearn.datasets.load_digits()``, sklearn imported on first use (~1 s, ~70 MB)."""
    from sklearn.datasets import load_digits

    return load_digits()


@functools.cache
def _all_digits() -> np.ndarray:
    images = _sklearn_digits().images  # (1797, 8, 8) float64 holding the integers 0..16
    x = np.rint(images).astype(np.uint8)[..., None]
    x.setflags(write=False)
    return x


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Row indices into ``load_digits()`` of the fixed train and test sets.

    Returns:
        ``(train_idx, test_idx)``: int64 arrays of 1500 and 297 distinct indices that together
        cover ``0..1796`` once.

    Example:
        >>> train_idx, test_idx = digits_split_indices()
        >>> len(set(train_idx) & set(test_idx))
        0
    """
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(DIGITS_N_TRAIN + DIGITS_N_TEST)
    return perm[:DIGITS_N_TRAIN], perm[DIGITS_N_TRAIN:]


def load_digits_split() -> tuple[np.ndarray, np.ndarray]:
    """The digits as channels-last uint8 images, split 1500 train / 297 test.

    Returns:
        ``(train, test)`` of shapes ``(1500, 8, 8, 1)`` and ``(297, 8, 8, 1)``, dtype uint8,
        values in ``0..16`` (:data:`DIGITS_LEVELS` levels). Fresh, writable copies on each call.

    Example:
        >>> train, _ = load_digits_split()
        >>> int(train.max())
        16
    """
    x = _all_digits()
    if len(x) != DIGITS_N_TRAIN + DIGITS_N_TEST:  # guard against a changed sklearn dataset
        raise DataError(f"sklearn's load_digits returned {len(x)} images, expected 1797")
    train_idx, test_idx = digits_split_indices()
    return x[train_idx], x[test_idx]


def load_digits_labels_split() -> tuple[np.ndarray, np.ndarray]:
    """The digits' class labels (0..9, int32) in the order of :func:`load_digits_split`.

    Returns:
        ``(train_labels, test_labels)`` of shapes ``(1500,)`` and ``(297,)``: row ``i`` is the
        class of image ``i`` of the same split.

    Example:
        >>> train_y, test_y = load_digits_labels_split()
        >>> train_y.shape, test_y.shape, int(train_y.max())
        ((1500,), (297,), 9)
    """
    y = _sklearn_digits().target.astype(np.int32)
    train_idx, test_idx = digits_split_indices()
    return y[train_idx], y[test_idx]
