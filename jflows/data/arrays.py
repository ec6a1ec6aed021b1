"""Reading and validating a user's ``.npy`` data: float vectors or uint8 images.

jflows models two kinds of arrays:

* **vectors**: a float array of shape ``(N, d)``, returned as float32. Every value must be finite.
* **images**: a uint8 array of shape ``(N, H, W, C)`` (channels last) holding integer levels
  ``0..levels-1``, where ``levels`` (default 256, at most 256) is the number of grey levels of
  the data. Values at or above ``levels`` are an error, never clipped: the bits/dim of the data
  depend on ``levels``, so a wrong value must be fixed by the user, not hidden.

Each problem raises :class:`jflows.errors.DataError` with one message that names the problem and
the fix.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((10, 3)))
    >>> load_array(path).dtype
    dtype('float32')
"""

from __future__ import annotations

import os

import numpy as np

from jflows.errors import DataError

_EXPECTED = "float (N, d) vectors or uint8 (N, H, W, C) images"


def check_levels(levels: int) -> int:
    """Check a number of grey levels: an integer in ``2..256``.

    Example:
        >>> check_levels(17)
        17
    """
    if (
        isinstance(levels, bool)
        or not isinstance(levels, int | np.integer)
        or not (2 <= levels <= 256)
    ):
        raise DataError(
            f"levels must be an integer from 2 to 256 (the number of values a uint8 pixel can "
            f"take in the data), got {levels!r}; fix the --levels option"
        )
    return int(levels)


def _check_vectors(x: np.ndarray, source: str) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        kind = "integer" if np.issubdtype(x.dtype, np.integer) or x.dtype == bool else "non-float"
        raise DataError(
            f"{source}: (N, d) vectors must be a float array, got {kind} dtype {x.dtype}. "
            f"Continuous data: convert with x.astype(np.float32). Discrete image levels: save "
            f"them as uint8 with shape (N, H, W, C), e.g. x.reshape(N, H, W, 1).astype(np.uint8)"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DataError(
            f"{source}: {int(bad.sum())} values are NaN or infinite (first in row {row}); drop "
            f"or impute those rows before training"
        )
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise DataError(
            f"{source}: some values exceed the float32 range (max |x| = "
            f"{float(np.max(np.abs(x))):.3g}); rescale the data, e.g. standardise it"
        )
    return x32


def _check_images(x: np.ndarray, levels: int, source: str) -> np.ndarray:
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating):
            fix = (
                "Quantize them to integer levels, e.g. np.round(x * 255).astype(np.uint8) for "
                "values in [0, 1], or flatten them to (N, H*W*C) to model continuous vectors"
            )
        else:
            fix = "If every value lies in 0..255, convert with x.astype(np.uint8)"
        raise DataError(
            f"{source}: (N, H, W, C) images must be uint8 integer levels, got dtype {x.dtype}. "
            f"{fix}"
        )
    top = int(x.max())
    if top >= levels:
        raise DataError(
            f"{source}: images hold values up to {top}, but levels={levels} allows only "
            f"0..{levels - 1}; pass --levels {top + 1} (or more, up to 256) to match the data, "
            f"or requantize the images (values are never clipped)"
        )
    return x


def validate_array(
    x: np.ndarray, *, levels: int = 256, source: str = "data", min_rows: int = 2
) -> np.ndarray:
    """Check an in-memory array against jflows' data contract.

    Args:
        x: float ``(N, d)`` vectors or uint8 ``(N, H, W, C)`` images, ``N >= min_rows``.
        levels: number of grey levels of images (ignored for vectors).
        source: how error messages name the data (e.g. the file path).
        min_rows: 2 for data to train on (a training and a test row), 1 for data to score.

    Returns:
        Vectors as float32, or the uint8 images unchanged.

    Raises:
        DataError: wrong rank or dtype, an empty axis, fewer than ``min_rows`` rows,
            non-finite vectors, or image values ``>= levels``.

    Example:
        >>> validate_array(np.full((4, 2, 2, 1), 16, np.uint8), levels=17).shape
        (4, 2, 2, 1)
    """
    x = np.asarray(x)
    if x.ndim not in (2, 4):
        hint = " (for one-channel images add a channel axis: x[..., None])" if x.ndim == 3 else ""
        raise DataError(
            f"{source}: expected {_EXPECTED}, got shape {x.shape} of rank {x.ndim}{hint}"
        )
    if 0 in x.shape[1:]:
        raise DataError(f"{source}: shape {x.shape} has an empty event axis; expected {_EXPECTED}")
    if len(x) < min_rows:
        why = " (one to train on, one to test on)" if min_rows == 2 else ""
        raise DataError(
            f"{source}: needs at least {min_rows} row{'s' * (min_rows > 1)}{why}, got "
            f"{len(x)}; the first axis indexes the data points"
        )
    if x.ndim == 2:
        return _check_vectors(x, source)
    return _check_images(x, check_levels(levels), source)


def _npy_problem(err: BaseException) -> str:
    """A short description of why ``np.load`` failed, without numpy's pickle advice."""
    text = str(err)
    if "Object arrays" in text:
        return "it holds an object array, which only pickle can read"
    if "pickle" in text:
        return "its bytes are not a .npy header"
    if "format version" in text or "header" in text.lower():
        return "its .npy header is damaged"
    if isinstance(err, EOFError) or "Failed to read all data" in text or "truncated" in text:
        return "the file is truncated (it was not written completely)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first[:120]


def load_array(path: str | os.PathLike, *, levels: int = 256, min_rows: int = 2) -> np.ndarray:
    """Load and validate a ``.npy`` file of vectors or images.

    Args:
        path: a file written by ``numpy.save``.
        levels: number of grey levels of uint8 images (``--levels`` on the command line).
        min_rows: rows the file must hold (2 to train on, 1 to score).

    Returns:
        float32 ``(N, d)`` vectors or uint8 ``(N, H, W, C)`` images.

    Raises:
        DataError: the file is missing or unreadable, or its array breaks the contract of
            :func:`validate_array`.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "digits.npy")
        >>> np.save(path, np.full((5, 8, 8, 1), 16, np.uint8))  # 17 levels: values 0..16
        >>> load_array(path, levels=17).shape
        (5, 8, 8, 1)
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        what = "is a directory, not a file" if os.path.isdir(source) else "does not exist"
        raise DataError(
            f"{source!r} {what}; pass the path of a .npy file written by numpy.save "
            f"(relative paths start at {os.getcwd()!r})"
        )
    try:
        loaded = np.load(source, allow_pickle=False)
    except PermissionError as err:
        raise DataError(
            f"cannot read {source!r}: permission denied; make the file readable "
            f"(chmod u+r) or copy it somewhere readable"
        ) from err
    except (OSError, ValueError, EOFError, UnicodeDecodeError, SyntaxError) as err:
        # numpy's own messages suggest allow_pickle=True, which would execute code from the
        # file: never useful for data, so the message says what to do instead
        raise DataError(
            f"{source!r} is not a valid .npy array (numpy could not read a plain array from "
            f"it: {_npy_problem(err)}); write the data with numpy.save(path, array) from a "
            f"numeric array (pickled, object and .npz files are not read)"
        ) from err
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise DataError(
            f"{source!r} is an .npz archive, not a single array; save the one array to use "
            f"with numpy.save(path, array)"
        )
    return validate_array(loaded, levels=levels, source=source, min_rows=min_rows)
