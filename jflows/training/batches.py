"""Rows of conditional and unconditional data alike: ``x`` or the pair ``(x, context)``.

Every training and evaluation path (:func:`jflows.training.fit`, the steps of
:mod:`jflows.training.step`, :func:`jflows.training.evaluate_nll`) takes *rows*: an array
``x`` for an unconditional model, or a tuple ``(x, c)`` whose arrays share their first axis for
a conditional one (``c`` the context of each row). A batch is rows too, and the model is
applied as ``log_prob(*as_args(batch))``, so one code path trains both kinds.

Example:
    >>> x, c = np.zeros((5, 2)), np.ones((5, 1))
    >>> n_rows((x, c)), take((x, c), np.array([0, 2]))[1].shape, len(as_args(x))
    (5, (2, 1), 1)
"""

from __future__ import annotations

from jflows.data import Dataset
from jflows.models.evaluate import Rows, n_rows, pad_rows, take  # noqa: F401 (re-exported)


def dataset_rows(dataset: Dataset, split: str) -> Rows:
    """``dataset.train`` or ``.test`` (``split``), paired with its context when it has one."""
    x = getattr(dataset, split)
    c = getattr(dataset, f"{split}_context", None)
    return x if c is None else (x, c)


def as_args(batch: Rows) -> tuple:
    """The positional arguments of ``log_prob``: ``(x,)`` or ``(x, context)``."""
    return tuple(batch) if isinstance(batch, tuple | list) else (batch,)
