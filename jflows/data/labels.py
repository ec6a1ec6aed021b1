"""Class labels for labelled data sets (hybrid models), split exactly as the data.

``digits`` takes scikit-learn's ``load_digits().target`` with the fixed W3 split of the
images; a ``.npy`` data file takes a ``.npy`` of integer labels, one per row (by default the
file beside it named ``<stem>_labels.npy``), split with the same permutation as the rows
(``numpy.random.default_rng(seed).permutation``; see :func:`jflows.data.load_dataset`).

Example:
    >>> train_y, test_y = load_labels("digits")
    >>> train_y.shape, test_y.shape
    ((1500,), (297,))
"""

from __future__ import annotations

import os

import numpy as np

from jflows.data.dataset import _split_rows
from jflows.data.digits import load_digits_labels_split
from jflows.errors import DataError


def default_labels_path(spec: str | os.PathLike) -> str:
    """``data.npy`` -> ``data_labels.npy`` (the labels file beside a data file).

    Example:
        >>> default_labels_path("runs/x.npy")
        'runs/x_labels.npy'
    """
    spec = os.fspath(spec)
    return spec[: -len(".npy")] + "_labels.npy"


def load_labels(
    spec: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """The integer labels of a data set, as ``(train, test)`` int32 arrays matching its rows.

    Args:
        spec: ``"digits"`` or a ``.npy`` data path (what ``load_dataset`` took).
        labels: a ``.npy`` file of integer labels (one per row of the data file); default
            :func:`default_labels_path` of ``spec``. Not allowed for ``digits``.
        seed: the seed ``load_dataset`` split the data file with.
        test_fraction: the fraction ``load_dataset`` held out.

    Raises:
        DataError: unlabelled data, a missing or non-integer labels file.
    """
    spec = os.fspath(spec)
    if spec == "digits":
        if labels is not None:
            raise DataError("digits has its own labels; drop --labels")
        return load_digits_labels_split()
    if not spec.endswith(".npy"):
        raise DataError(
            f"{spec!r} has no labels; hybrid training needs digits or a .npy data file with a "
            ".npy of integer labels beside it (data_labels.npy, or --labels FILE)"
        )
    path = default_labels_path(spec) if labels is None else os.fspath(labels)
    if not os.path.exists(path):
        raise DataError(f"no labels file {path!r}; write one integer label per row of {spec!r} "
                        "there, or pass --labels FILE")
    y = np.load(path, allow_pickle=False)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path!r} must hold a 1-D integer array, got {y.dtype} {y.shape}")
    rows = np.load(spec, mmap_mode="r", allow_pickle=False).shape[0]
    if len(y) != rows:
        raise DataError(f"{path!r} holds {len(y)} labels but {spec!r} has {rows} rows")
    train, test = _split_rows(y.astype(np.int32), seed, test_fraction)
    return train, test
