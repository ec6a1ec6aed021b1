"""Validation split, best-model tracking, early stopping and divergence checks of :func:`fit`.

Small data sets are easy to memorise: a flow with a few thousand parameters trained on a few
hundred rows drives its training loss far below any held-out figure. ``fit`` therefore holds
out a validation split of the training rows when the data are small (fewer than
:data:`SMALL_DATA_ROWS` training rows: :data:`DEFAULT_VAL_FRACTION` of them), evaluates it with
every test evaluation, keeps the state with the lowest validation NLL (the *best* state, which
``jflows eval``/``sample`` and the pictures use) and stops after :data:`DEFAULT_PATIENCE`
evaluations without improvement. The validation rows are chosen by a permutation from
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(2,)))``, independent of the
train/test split of a ``.npy`` file (``default_rng(seed)``) and of the toy samplers' streams.

A run *diverges* when an evaluation's figures are not finite, or when more than
:data:`DIVERGED_FRACTION` of the steps since the previous evaluation were skipped because their
loss or gradient was not finite (see :func:`jflows.training.make_train_step`).

Example:
    >>> fit_rows, val_rows = split_validation(455, 0.1, seed=0)
    >>> len(fit_rows), len(val_rows)
    (409, 46)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jflows.errors import ConfigError
from jflows.training.figures import describe, find_figure, read_figure

SMALL_DATA_ROWS = 10_000
"""Training sets with fewer rows than this get a validation split by default."""
DEFAULT_VAL_FRACTION = 0.1
"""Fraction of a small training set held out for validation by default."""
DEFAULT_PATIENCE = 10
"""Evaluations without a better validation NLL before training stops (validation on)."""
DIVERGED_FRACTION = 0.5
"""A run whose last evaluation window skipped more than this fraction of steps diverged."""


def default_val_fraction(n_train: int) -> float:
    """:data:`DEFAULT_VAL_FRACTION` below :data:`SMALL_DATA_ROWS` training rows, else 0."""
    return DEFAULT_VAL_FRACTION if n_train < SMALL_DATA_ROWS else 0.0


def check_val_fraction(val_fraction: float) -> float:
    """Raises ConfigError unless ``0 <= val_fraction < 1``."""
    if isinstance(val_fraction, bool) or not (
        isinstance(val_fraction, int | float) and 0.0 <= val_fraction < 1.0
    ):
        raise ConfigError(
            f"the validation fraction must lie in [0, 1), got {val_fraction!r}; pass e.g. "
            f"--val-fraction 0.1 (0 for no validation split)"
        )
    return float(val_fraction)


def check_patience(patience: int) -> int:
    """Raises ConfigError unless ``patience`` is an integer >= 0 (0: no early stopping)."""
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ConfigError(
            f"patience must be an integer >= 0 (evaluations without improvement before "
            f"stopping; 0 never stops early), got {patience!r}"
        )
    return patience


def split_validation(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit_rows, val_rows)`` of ``n`` training rows (sorted, disjoint).

    ``round(val_fraction * n)`` rows (at least 1 when ``val_fraction > 0``, and never more
    than ``n - 2``) are held out; with ``val_fraction = 0`` every row is a fit row.
    """
    check_val_fraction(val_fraction)
    if val_fraction == 0.0:
        return np.arange(n), np.arange(0)
    n_val = min(max(1, round(val_fraction * n)), n - 2)
    if n_val < 1:
        raise ConfigError(
            f"a validation split needs at least 3 training rows, got {n}; pass "
            f"--val-fraction 0 (val_fraction=0) or more data"
        )
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def best_record(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation with the lowest finite validation NLL (the earliest among ties), or None.

    The validation NLL is ``val_nll`` or its labelled form (``val_nll_bound``, ...; see
    :mod:`jflows.training.figures`).
    """
    best, best_value = None, None
    for record in history:
        value = read_figure(record, "val", "nll")
        finite = value is not None and math.isfinite(value)
        if finite and (best is None or value < best_value):
            best, best_value = record, value
    return best


def evals_since_best(history: list[dict[str, Any]]) -> int:
    """Number of evaluations after the best one (all of them when none is best yet)."""
    best = best_record(history)
    if best is None:
        return len(history)
    return sum(1 for record in history if record["step"] > best["step"])


def divergence(record: dict[str, Any], previous: dict[str, Any] | None) -> str | None:
    """Why the evaluation ``record`` shows a dead run, or None when it looks alive.

    Args:
        record: an evaluation record (``step``, the test and validation NLL under any label,
            ``nonfinite_steps``).
        previous: the evaluation before it (None: the window starts at step 0).
    """
    for split in ("test", "val"):
        key = find_figure(record, split, "nll")
        if key is not None and (record[key] is None or not math.isfinite(record[key])):
            return f"the {describe(split, 'nll', record)} at step {record['step']} is not finite"
    start = 0 if previous is None else int(previous["step"])
    skipped_before = 0 if previous is None else int(previous.get("nonfinite_steps", 0))
    window = int(record["step"]) - start
    skipped = int(record.get("nonfinite_steps", 0)) - skipped_before
    if window > 0 and skipped > DIVERGED_FRACTION * window:
        return (
            f"{skipped} of the {window} steps up to step {record['step']} were skipped because "
            f"their loss or gradient was not finite"
        )
    return None
