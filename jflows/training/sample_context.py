"""``jflows sample --context``: how many samples to draw, and the context of each.

A conditional run draws from ``p(x | c)``: ``--context C.npy`` gives one context row per
sample, or a single row that every one of ``--n`` samples shares. An unconditional run takes
no context, and ``--n`` is then required.

Example:
    >>> config = RunConfig.from_dict({"model": "realnvp", "options": {}, "data": "moons",
    ...                               "data_name": "moons", "kind": "vector", "event_shape": [2]})
    >>> sample_count_and_context(config, "runs/moons", 5, None)
    (5, None)
"""

from __future__ import annotations

import os

import numpy as np

from jflows.data import load_context
from jflows.errors import ConfigError, DataError
from jflows.training.run_config import RunConfig
from jflows.training.run_data import check_context_shape


def sample_count_and_context(
    config: RunConfig, run_dir, n: int | None, context: str | os.PathLike | None
) -> tuple[int, np.ndarray | None]:
    """``(n, contexts)`` for ``jflows sample``: ``contexts`` has ``n`` rows, or is None.

    Raises:
        ConfigError: no ``--n`` and no context rows to count, or a ``--n`` that disagrees
            with a context file of several rows.
        DataError: a context for an unconditional run, none for a conditional one, or an
            invalid context file (wrong dtype, shape, non-finite values).
    """
    run, shape = os.fspath(run_dir), config.get("context_shape")
    if shape is None:
        if context is not None:
            raise DataError(
                f"run {run!r} is unconditional (trained without --context), so --context "
                f"{os.fspath(context)!r} would be ignored; drop --context"
            )
        if n is None:
            raise ConfigError("--n is required: pass --n N, the number of samples to draw")
        return n, None
    if context is None:
        raise DataError(
            f"run {run!r} is conditional, p(x | c) with contexts of shape {tuple(shape)}; pass "
            f"--context C.npy (one row per sample, or one row and --n N)"
        )
    source = os.fspath(context)
    rows = _rows(source)
    c = check_context_shape(load_context(source, rows, "the samples"), config, run, source)
    if n is None:
        return rows, c
    if rows == 1:
        return n, np.repeat(c, n, axis=0)
    if n != rows:
        raise ConfigError(
            f"--n {n} disagrees with --context {source!r}, which holds {rows} rows (one per "
            f"sample); drop --n, or pass a context file of a single row to repeat it {n} times"
        )
    return n, c


def _rows(source: str) -> int:
    """Rows of a context file (what :func:`load_context` then checks); 0 when unreadable."""
    try:
        shape = np.load(source, mmap_mode="r", allow_pickle=False).shape
    except Exception:  # noqa: BLE001 - load_context reports a bad file in one line
        return 0
    return int(shape[0]) if shape else 0
