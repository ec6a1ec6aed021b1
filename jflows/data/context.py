"""Context arrays of conditional data: a ``.npy`` of one float row per data row, validated.

``jflows train --data x.npy --context c.npy`` trains ``p(x | c)``: row ``i`` of ``c.npy`` is the
context of row ``i`` of ``x.npy``. A context file holds floats of shape ``(N,)`` (one scalar
per row, read as ``(N, 1)``) or ``(N, k)``, with the data's ``N`` and only finite values; any
other file is refused with one line that names both files and the fix.

Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "c.npy")
    >>> np.save(path, np.linspace(-1, 1, 5))
    >>> load_context(path, 5, "x.npy").shape
    (5, 1)
"""

from __future__ import annotations

import os

import numpy as np

from jflows.errors import DataError

CONTEXT_HINT = "np.save(path, c.astype(np.float32)) with c of shape (N,) or (N, k)"
"""How to write a valid context file (quoted by the error messages)."""


def validate_context(c: np.ndarray, n_rows: int, source: str, data: str) -> np.ndarray:
    """``c`` as float32 ``(N, k)``, checked against the ``n_rows`` rows of ``data``.

    Raises:
        DataError: a non-float dtype, a rank other than 1 or 2, an empty context axis, a row
            count other than ``n_rows``, or non-finite values (the message names ``source``,
            ``data`` and the fix).
    """
    if not isinstance(c, np.ndarray) or not np.issubdtype(c.dtype, np.floating):
        dtype = getattr(c, "dtype", type(c).__name__)
        raise DataError(
            f"context {source!r} holds {dtype} values, but contexts of {data!r} must be floats; "
            f"write it with {CONTEXT_HINT}"
        )
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[1] < 1:
        raise DataError(
            f"context {source!r} has shape {c.shape}, but a context is one row per row of "
            f"{data!r}: shape (N,) or (N, k); write it with {CONTEXT_HINT}"
        )
    if len(c) != n_rows:
        raise DataError(
            f"context {source!r} has {len(c)} rows but data {data!r} has {n_rows}; give one "
            f"context row per data row, in the same order"
        )
    bad = ~np.isfinite(c).all(axis=1)
    if bad.any():
        raise DataError(
            f"context {source!r} holds non-finite values in {int(bad.sum())} rows (first row "
            f"{int(np.argmax(bad))}); drop those rows from both {source!r} and {data!r}, or fill "
            f"them with finite values"
        )
    return c.astype(np.float32)


def load_context(path: str | os.PathLike, n_rows: int, data: str) -> np.ndarray:
    """Reads and validates the context file ``path`` of the ``n_rows`` rows of ``data``.

    Returns:
        float32 ``(N, k)``.

    Raises:
        DataError: a missing or unreadable file, or one :func:`validate_context` refuses.
    """
    source = os.fspath(path)
    if not source.endswith(".npy"):
        raise DataError(
            f"--context {source!r} must be a .npy file (one float row per row of {data!r}); "
            f"write it with {CONTEXT_HINT}"
        )
    if not os.path.isfile(source):
        raise DataError(
            f"--context {source!r} does not exist; pass the .npy of one context row per row of "
            f"{data!r} (relative paths start at {os.getcwd()!r})"
        )
    try:
        c = np.load(source, allow_pickle=False)
    except (OSError, ValueError, EOFError, UnicodeDecodeError, SyntaxError) as err:
        raise DataError(
            f"--context {source!r} is not a readable .npy array ({type(err).__name__}); write "
            f"it with {CONTEXT_HINT}"
        ) from err
    return validate_context(c, n_rows, source, data)
