"""The data a run trains and evaluates on: reduced bit depth, and data given to a trained run."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jflows.data import (
    CONDITIONAL_TOYS,
    Dataset,
    load_array,
    load_context,
    load_dataset,
    off_lattice_rows,
    reduce_bits,
)
from jflows.errors import DataError
from jflows.training.run_config import RunConfig


def reduce_dataset_bits(dataset: Dataset, n_bits: int | None) -> Dataset:
    """``dataset`` with its images reduced to ``2 ** n_bits`` levels (unchanged for None).

    Raises:
        DataError: ``n_bits`` given for vector data, or more levels than the data have.
    """
    if n_bits is None:
        return dataset
    if not dataset.is_image:
        raise DataError(
            f"--n-bits {n_bits} only applies to image data, but {dataset.name!r} holds vectors; "
            f"drop the option"
        )
    train, levels = reduce_bits(dataset.train, dataset.levels, n_bits)
    test, _ = reduce_bits(dataset.test, dataset.levels, n_bits)
    return dataclasses.replace(dataset, train=train, test=test, levels=levels)


def data_for_run(spec: str, config: RunConfig, run_dir: str | os.PathLike) -> np.ndarray:
    """The rows ``jflows eval`` scores: all of a ``.npy`` file, or a built-in set's test split.

    A ``.npy`` file is the user's choice of rows, so every row is scored, also when it is the
    run's own training file (then its training, validation and test rows together; the run's
    test figure is in ``metrics.json``).

    Built-in sets are loaded with the run's seed and sizes, so the run's own data name gives
    exactly the test set that ``fit`` evaluated. The rows must match the run's kind and event
    shape, images must stay below the run's number of levels, and the lattice columns of a
    run that dequantized them must lie on their lattices.

    Raises:
        DataError: unreadable or invalid data, or data the run's model cannot score.
    """
    if spec.endswith(".npy"):
        x = load_array(spec, levels=256, min_rows=1)  # one row is enough to score
    else:
        sizes = {k: config[k] for k in ("n_train", "n_test") if k in config}
        x = load_dataset(spec, seed=config["seed"], **sizes).test
    run = os.fspath(run_dir)
    shape = tuple(config["event_shape"])
    n_bits = config.get("n_bits")
    if n_bits is not None and x.ndim == 4:  # the run models reduced bit depth
        levels = config.get("data_levels") or 256
        if int(x.max()) >= levels:
            raise DataError(
                f"data {spec!r} holds values up to {int(x.max())}, but run {run!r} was trained "
                f"on {levels}-level images reduced to {n_bits} bits; evaluate it on "
                f"{levels}-level images"
            )
        x, _ = reduce_bits(x, levels, n_bits)
    kind = "image" if x.ndim == 4 else "vector"
    if kind != config["kind"] or tuple(x.shape[1:]) != shape:
        raise DataError(
            f"data {spec!r} holds {kind}s of shape {tuple(x.shape[1:])}, but run {run!r} models "
            f"{config['kind']}s of shape {shape}; evaluate the run on data of that shape"
        )
    if kind == "image" and int(x.max()) >= config["levels"]:
        raise DataError(
            f"data {spec!r} holds values up to {int(x.max())}, but run {run!r} models "
            f"{config['levels']} levels (0..{config['levels'] - 1}); evaluate it on images "
            f"quantized to those levels"
        )
    columns = config.get("lattice_columns")
    if kind == "vector" and columns:
        offsets, steps = config["lattice_offsets"], config["lattice_spacings"]
        off = off_lattice_rows(x, columns, offsets, steps)
        if len(off):
            raise DataError(
                f"data {spec!r} has {len(off)} row{'s' * (len(off) > 1)} (the first: row "
                f"{int(off[0])}) whose lattice columns {list(columns)} are off the lattices "
                f"run {run!r} dequantized (offsets {list(offsets)}, steps {list(steps)}); "
                f"score rows whose values in those columns lie on the lattices"
            )
    return x


def context_for_run(
    spec: str, context: str | os.PathLike | None, config: RunConfig, run_dir, n: int
) -> np.ndarray | None:
    """The contexts of the ``n`` rows of ``spec`` that ``jflows eval`` scores, or None.

    A conditional run (``config.context_shape`` set) needs them: a conditional built-in gives
    its test split's own (as :func:`data_for_run` gives its test rows), a ``.npy`` data file
    takes ``context`` (one float row per data row, :func:`jflows.data.load_context`); by default
    the run's own context file when ``spec`` is the run's own data file. An unconditional run
    takes none.

    Raises:
        DataError: a context for an unconditional run, none for a conditional one, an invalid
            context file, or contexts of another shape than the run's.
    """
    run, shape = os.fspath(run_dir), config.get("context_shape")
    if shape is None:
        if context is not None:
            raise DataError(
                f"run {run!r} is unconditional (trained without --context), so --context "
                f"{os.fspath(context)!r} would be ignored; drop --context"
            )
        return None
    if spec in CONDITIONAL_TOYS and context is None:
        sizes = {k: config[k] for k in ("n_train", "n_test") if k in config}
        return load_dataset(spec, seed=config["seed"], **sizes).test_context
    if context is None and os.path.abspath(spec) == config["data"] and config.get("context"):
        context = config["context"]  # the run's own data file: its own contexts
    if context is None:
        raise DataError(
            f"run {run!r} is conditional, p(x | c) with contexts of shape {tuple(shape)}; pass "
            f"--context C.npy with one context row per row of {spec!r}"
        )
    c = load_context(context, n, spec)
    return check_context_shape(c, config, run, os.fspath(context))


def check_context_shape(c: np.ndarray, config: RunConfig, run: str, source: str) -> np.ndarray:
    """``c`` when its rows have the run's ``context_shape``, else a DataError naming both."""
    shape = tuple(config["context_shape"])
    if tuple(c.shape[1:]) != shape:
        raise DataError(
            f"context {source!r} has rows of shape {tuple(c.shape[1:])}, but run {run!r} was "
            f"trained on contexts of shape {shape}; pass contexts of that shape"
        )
    return c
