"""Argument types of the ``jflows`` command: checked numbers, refused in one line by argparse.

Example:
    >>> positive_int("3"), seed_int("0"), temperature_float("0.7")
    (3, 0, 0.7)
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a positive integer, got '0'
"""

from __future__ import annotations

import argparse
import math
from typing import Any


def _number(text: str, cast, what: str, ok) -> Any:
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Argument type: an integer >= 1."""
    return _number(text, int, "a positive integer", lambda v: v >= 1)


def nonnegative_int(text: str) -> int:
    """Argument type: an integer >= 0."""
    return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def seed_int(text: str) -> int:
    """Argument type: a random seed, ``0 <= seed < 2**32`` (larger seeds would alias)."""
    return _number(text, int, "an integer from 0 to 2**32-1", lambda v: 0 <= v < 2**32)


def temperature_float(text: str) -> float:
    """Argument type: a finite number >= 0 (0 draws the mode; nan, inf, negatives refused)."""
    return _number(text, float, "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)
