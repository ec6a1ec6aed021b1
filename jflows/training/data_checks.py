"""Checks of a run's data that would otherwise fail silently, and the settings they lead to.

A continuous density on a constant column or on a lattice column (counts, coded categories,
rounded values) is unbounded, so a run on them would report figures that only measure how
tall the density's spikes grew (:mod:`jflows.data.columns`); rows repeated many times (an
oversampled or concatenated file) do the same and put training rows in the test split.
:func:`vector_settings` refuses constant columns, warns about discrete columns and repeated
rows, and with ``dequantization="uniform"`` models
the lattice columns as discrete values by dequantizing them
(:class:`~jflows.bijectors.LatticeDequantization`). :func:`warn_unused_levels` warns about
images that use a small part of the levels they are modelled with (a ``--levels`` left out).

Example:
    >>> import numpy as np
    >>> x = np.stack([np.linspace(-1, 1, 100), np.arange(100) % 3], axis=1)
    >>> settings = vector_settings(x, "x.npy", "uniform")
    >>> settings["lattice_columns"], settings["lattice_spacings"], settings["lattice_levels"]
    ([1], [1.0], [3])
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from jflows.bijectors import LatticeDequantization
from jflows.data import (
    Discrete,
    Lattice,
    constant_columns,
    dequantized_stats,
    discrete_columns,
    vector_stats,
)
from jflows.data.preprocess import STD_FLOOR
from jflows.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

REPEATED_ROWS = 0.01
"""Share of training rows repeating other rows from which a run is warned (if that is also ten
times what :func:`chance_repeats` expects of its columns' values)."""

FIX = (
    "pass --dequantization uniform to model them as discrete values (the figures then become "
    "lower bounds, ..._bound), or drop them"
)


def _columns(found) -> str:
    names = ", ".join(str(getattr(c, "column", c)) for c in found)
    return f"column{'s' * (len(found) > 1)} {names}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _counts(found) -> str:
    counts = [c.distinct for c in found]
    if len(counts) > 3:
        return f"{min(counts)} to {max(counts)}"
    return _and([str(n) for n in counts])


def _describe(found: list[Lattice], spec: str, rows: int) -> str:
    steps = _and([f"{h:g}" for h in sorted({c.spacing for c in found})])
    where = "lattices" if len(found) > 1 else "a lattice"
    return (
        f"{_columns(found)} of {spec!r} take{'s' * (len(found) == 1)} only {_counts(found)} "
        f"distinct values in {rows} training rows (on {where} of step {steps})"
    )


def _pixel_hint(train: np.ndarray) -> str:
    """For vectors of integer levels 0..255 (flattened images): how to model them as images."""
    x = np.asarray(train)
    if x.min() < 0 or x.max() > 255 or not np.all(x == np.round(x)):
        return ""
    return (
        ", or, if the rows are flattened images, save them as uint8 (N, H, W, C) images for an "
        "image model, which dequantizes every pixel, constant ones included"
    )


def chance_repeats(rows: int, distinct: list[int]) -> float:
    r"""Rows expected to repeat another if ``rows`` rows were drawn uniformly from the grid.

    With ``K = prod(distinct)`` possible rows, ``rows - K (1 - (1 - 1/K)^rows)`` (about
    ``rows^2 / (2K)`` for a large grid): columns of a few values each (categories, counts) make
    repeated rows expected; continuous columns make them a sign of a duplicated file.

    Example:
        >>> round(chance_repeats(20_000, [2, 5]))  # 10 possible rows
        19990
        >>> chance_repeats(1000, [500, 900, 1000]) < 0.01
        True
    """
    log_k = float(np.sum(np.log(np.maximum(distinct, 1))))
    if log_k > 2 * np.log(max(rows, 2)) + 20:  # K > e^20 rows^2: below 1e-8 rows expected
        return 0.0
    k = float(np.exp(log_k))
    return float(rows - k * -np.expm1(rows * np.log1p(-1.0 / k))) if k > 1 else rows - 1.0


def vector_settings(
    train: np.ndarray, spec: str, dequantization: str | None
) -> dict[str, Any]:
    """``mean``, ``std`` and the ``lattice_*`` settings of a run on ``(N, d)`` vectors.

    Args:
        train: the training rows.
        spec: the data as the user named it (for the messages).
        dequantization: None (lattice columns are reported, not changed) or ``"uniform"``
            (they are dequantized; the stored mean and std are those of the dequantized data).

    Raises:
        DataError: a column holds one value in every training row.
        ConfigError: ``dequantization`` is not None or ``"uniform"``, or is ``"uniform"``
            while no column lies on a lattice.
    """
    constant = constant_columns(train)
    if constant:
        values = ", ".join(f"{float(train[0, j]):g}" for j in constant)
        raise DataError(
            f"{_columns(constant)} of {spec!r} hold{'s' * (len(constant) == 1)} one value "
            f"({values}) in every training row: a continuous density on a constant is "
            f"unbounded (the standardisation would divide by {STD_FLOOR:g} and take "
            f"{-np.log(STD_FLOOR):.1f} nats per column off every NLL); drop "
            f"{'it' if len(constant) == 1 else 'them'}{_pixel_hint(train)}"
        )
    if dequantization not in (None, "uniform"):
        raise ConfigError(
            f"--dequantization {dequantization} only applies to image data; vector data take "
            f"--dequantization uniform (of their lattice columns) or no option"
        )
    distinct_rows = np.unique(train, axis=0)
    repeated = len(train) - len(distinct_rows)
    chance = chance_repeats(len(train), [len(np.unique(column)) for column in train.T])
    duplicated = repeated >= max(1, REPEATED_ROWS * len(train)) and repeated > 10 * chance
    if duplicated:
        logger.warning(
            "%d of the %d training rows of %r repeat other rows exactly: the test and "
            "validation rows then repeat training rows too, so their figures reward memorising "
            "and early stopping cannot see it, and a density can spike on the repeated points; "
            "if the data were oversampled or concatenated, deduplicate them first "
            "(np.unique(x, axis=0))", repeated, len(train), spec,
        )
    # judged on the distinct rows when rows repeat: the columns' own repeats
    found = discrete_columns(distinct_rows if duplicated else train)
    lattice = [c for c in found if isinstance(c, Lattice)]
    irregular = [c for c in found if isinstance(c, Discrete)]
    if irregular:
        counts = _counts(irregular)
        logger.warning(
            "%s of %r take%s only %s distinct values in %d training rows, not on one lattice: "
            "a density on them can grow without bound; recode each as integer levels "
            "(np.unique(column, return_inverse=True)) and pass --dequantization uniform, or "
            "drop them", _columns(irregular), spec, "s" * (len(irregular) == 1), counts,
            len(train),
        )
    mean, std = vector_stats(train)
    settings: dict[str, Any] = {"lattice_columns": None, "lattice_offsets": None,
                                "lattice_spacings": None, "lattice_levels": None}
    if dequantization is None:
        if lattice:
            logger.warning(
                "%s: a density on such values can grow without bound, so the NLL can fall "
                "without limit and does not measure a density; %s",
                _describe(lattice, spec, len(train)), FIX,
            )
    elif not lattice:
        raise ConfigError(
            f"--dequantization uniform dequantizes the lattice columns of vector data, but no "
            f"column of {spec!r} takes few enough distinct values on a lattice; drop the option"
        )
    else:
        logger.info("dequantizing %s", _describe(lattice, spec, len(train)))
        mean, std = dequantized_stats(mean, std, tuple(lattice))
        settings.update(
            lattice_columns=[c.column for c in lattice],
            lattice_offsets=[c.offset for c in lattice],
            lattice_spacings=[c.spacing for c in lattice],
            lattice_levels=[c.levels for c in lattice],
        )
    return {"mean": list(mean), "std": list(std), **settings}


def warn_unused_levels(train: np.ndarray, levels: int, spec: str) -> None:
    """Warns when images use less than half of their ``levels`` (a ``--levels`` left out).

    17-level digits or 0/1 masks read as 256-level data are modelled in ``[0, 17/256)`` of the
    unit interval and their bits/dim count 8 bits per scalar, not what a reader compares them
    with; the warning names the largest value and the ``--levels`` that fits it.

    Example:
        >>> warn_unused_levels(np.zeros((4, 2, 2, 1), np.uint8) + 200, 256, "x.npy")  # no warning
    """
    top = int(np.max(train))
    if top + 1 <= levels // 2:
        logger.warning(
            "the images of %r use values 0..%d only, but are modelled, and their bits/dim "
            "counted, as %d-level data; if they have %d levels, pass --levels %d",
            spec, top, levels, top + 1, top + 1,
        )


def lattice_layers(config) -> list[LatticeDequantization]:
    """The dequantization layer of a run's lattice columns: one layer, or none.

    ``config`` is a run's ``config.json`` content (a mapping); its ``lattice_*`` settings come
    from :func:`vector_settings`.
    """
    if not config.get("lattice_columns"):
        return []
    return [LatticeDequantization(
        columns=tuple(config["lattice_columns"]), offsets=tuple(config["lattice_offsets"]),
        spacings=tuple(config["lattice_spacings"]), levels=tuple(config["lattice_levels"]),
    )]
