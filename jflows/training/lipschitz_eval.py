"""``jflows eval --lipschitz``: bi-Lipschitz figures of a trained run and its 2-D picture.

The figures are those of :func:`jflows.models.bi_lipschitz` on (a seeded subsample of) the rows
being evaluated, for the run's evaluation model: the map from the data as given (the run's
standardisation included; for images, from the dequantized data, drawn with the run's own
dequantizer) to the latent. They go to ``eval.json`` under ``"lipschitz"``; 2-D runs also get
``lipschitz.png`` (:mod:`jflows.training.lipschitz_picture`).
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jflows.errors import NotBijectiveError
from jflows.models.lipschitz_report import bi_lipschitz
from jflows.training.lipschitz_picture import (
    LIPSCHITZ_PICTURE,
    lipschitz_grid,
    save_lipschitz_picture,
)
from jflows.training.plots import plot_range

LIPSCHITZ_POINTS = 1000
"""Rows measured by default (a seeded subsample of larger data)."""


def subsample(x: np.ndarray, points: int, seed: int = 0) -> np.ndarray:
    """At most ``points`` rows of ``x``, chosen without replacement by ``seed`` (in order).

    Example:
        >>> subsample(np.arange(10)[:, None], 3).ravel().tolist()
        [5, 6, 9]
    """
    if len(x) <= points:
        return x
    rows = np.sort(np.random.default_rng(seed).choice(len(x), points, replace=False))
    return x[rows]


def run_lipschitz(
    out_dir: str | os.PathLike,
    model: nn.Module,
    variables: dict,
    x: np.ndarray,
    *,
    points: int = LIPSCHITZ_POINTS,
    seed: int = 0,
    title: str | None = None,
) -> tuple[dict[str, Any], str]:
    """The ``lipschitz`` record of ``eval.json`` and its one-line summary.

    Measures ``bi_lipschitz`` on at most ``points`` rows of ``x``; for 2-D vector models it
    also writes ``out_dir/lipschitz.png`` over the range of ``x`` and records the maxima over
    that grid under ``"plane"``: the gaps between the data's components are where a flow
    between supports of different topology needs its large constants, which data points alone
    do not sample.

    Raises:
        NotBijectiveError: the model is not a bijection after its dequantizer.

    Example:
        >>> from jflows.training import load_run
        >>> run = load_run("runs/moons")  # a run of jflows train
        >>> x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
        >>> record, line = run_lipschitz("runs/moons", run.eval_model, run.state.variables(), x)
        >>> record["points"], sorted(k for k in record if k.startswith("forward"))
        (50, ['forward_max', 'forward_q50', 'forward_q90', 'forward_q99'])
    """
    rows = subsample(np.asarray(x), points, seed)
    key = jax.random.key(seed)
    try:
        report = bi_lipschitz(model, variables, rows, key=key)
    except NotBijectiveError as err:
        raise NotBijectiveError(f"--lipschitz: {err}; for this run, drop --lipschitz") from err
    record = {**report.figures(), "seed": seed}
    line = f"{report.summary()} ({report.measured})"
    if tuple(model.event_shape) == (2,):
        bounds = plot_range(np.asarray(x))
        forward, inverse = lipschitz_grid(model, variables, bounds, key=key)
        path = os.path.join(out_dir, LIPSCHITZ_PICTURE)
        save_lipschitz_picture(path, forward, inverse, bounds, np.asarray(x), title)
        plane = {"forward_max": float(forward.max()), "inverse_max": float(inverse.max()),
                 "bi_lipschitz": float(forward.max() * inverse.max()),
                 "bounds": [list(map(float, b)) for b in bounds], "points": int(forward.size)}
        record.update(picture=LIPSCHITZ_PICTURE, plane=plane)
        line += (f"; over the plane around the data (gaps included): Lip(f) "
                 f"{plane['forward_max']:.4g}, Lip(f^-1) {plane['inverse_max']:.4g}, "
                 f"bi-Lipschitz {plane['bi_lipschitz']:.4g}; wrote {path}")
    return record, line
