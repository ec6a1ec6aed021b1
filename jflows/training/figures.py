"""Names of a run's figures, labelled by what the model's ``log_prob`` is.

An evaluation reports, per split (``test``, ``val``), the mean NLL, its standard error and, for
images, bits/dim. Their names carry the model's :class:`~jflows.bijectors.Estimate` label:

=============================  ======================================================
``log_prob`` is                figures
=============================  ======================================================
exact, or unbiased (roulette)  ``test_nll``, ``test_nll_stderr``, ``test_bits_per_dim``
a lower bound (dequantized     ``test_nll_bound``, ``test_nll_bound_stderr``,
images, stochastic layers)     ``test_bits_per_dim_bound``
biased (truncated series)      ``test_nll_biased``, ...
=============================  ======================================================

and the record says which in ``"likelihood"`` (``"exact"``, ``"unbiased"``, ``"bound"``,
``"biased"``). Code that reads records uses :func:`read_figure`, which finds a figure whatever
its label.

Example:
    >>> from jflows.bijectors import Estimate
    >>> figure_key("test", "nll", Estimate.BOUND)
    'test_nll_bound'
    >>> read_figure({"val_nll_bound": 1.5}, "val", "nll")
    1.5
"""

from __future__ import annotations

import math
from typing import Any

from jflows.bijectors.base import Estimate

FIGURES = ("nll", "nll_stderr", "bits_per_dim")
SPLITS = ("test", "val")


def estimate_of(model: Any) -> Estimate:
    """The model's declared :class:`Estimate` (exact for modules that declare none)."""
    return Estimate(getattr(model, "estimate", Estimate.EXACT))


def likelihood_name(estimate: Estimate) -> str:
    """``"exact"``, ``"unbiased"``, ``"bound"`` or ``"biased"``."""
    return Estimate(estimate).name.lower()


def figure_key(split: str | None, figure: str, estimate: Estimate) -> str:
    """The record key of ``figure`` (one of :data:`FIGURES`) on ``split``.

    ``split=None`` gives the bare name (``nll_bound``), as in ``jflows eval``'s ``eval.json``.
    """
    label = Estimate(estimate).label
    prefix = f"{split}_" if split else ""
    if figure == "nll_stderr":
        return f"{prefix}nll{label}_stderr"
    return f"{prefix}{figure}{label}"


def all_figure_keys() -> tuple[str, ...]:
    """Every figure key an evaluation record may hold, whatever the label."""
    return tuple(
        figure_key(split, figure, estimate)
        for estimate in (Estimate.EXACT, Estimate.BOUND, Estimate.BIASED)
        for split in SPLITS
        for figure in FIGURES
    )


def labelled(summary: dict[str, float], split: str | None, estimate: Estimate) -> dict[str, float]:
    """``{"nll": ..}`` (from ``summarize_nll``) as ``{"test_nll_bound": ..}`` etc."""
    return {figure_key(split, k, estimate): v for k, v in summary.items() if k in FIGURES}


def find_figure(record: dict[str, Any], split: str | None, figure: str) -> str | None:
    """The key under which ``record`` holds ``figure`` of ``split`` (any label), or None."""
    for estimate in (Estimate.EXACT, Estimate.BOUND, Estimate.BIASED):
        key = figure_key(split, figure, estimate)
        if key in record:
            return key
    return None


def read_figure(record: dict[str, Any], split: str | None, figure: str) -> float | None:
    """The value of ``figure`` of ``split`` in ``record`` (any label), or None."""
    key = find_figure(record, split, figure)
    return None if key is None else record[key]


def is_finite_figure(value: Any) -> bool:
    """True for a finite number (None and NaN are not)."""
    return value is not None and math.isfinite(value)


def describe(split: str | None, figure: str, record: dict[str, Any]) -> str:
    """A human name for the figure, e.g. ``"test NLL (bound)"`` (``"NLL (bound)"`` for None)."""
    key = find_figure(record, split, figure) or figure_key(split, figure, Estimate.EXACT)
    names = {"test": "test", "val": "validation"}
    what = {"nll": "NLL", "nll_stderr": "NLL stderr", "bits_per_dim": "bits/dim"}[figure]
    suffix = ""
    for estimate in (Estimate.BOUND, Estimate.BIASED):
        if Estimate(estimate).label in key:
            suffix = f" ({likelihood_name(estimate)})"
    head = f"{names.get(split, split)} " if split else ""
    return f"{head}{what}{suffix}"
