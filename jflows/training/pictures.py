"""Pictures of a trained flow: what a run draws into its directory, and ``jflows sample``.

``save_run_pictures`` writes ``samples.png`` for every run and ``density.png`` for 1-D and 2-D
vector data (for conditional 2-D data ``p(x | c)`` at three contexts, see
:mod:`jflows.training.conditional_pictures`); each picture's title names the model, the
step, the test figure and the sampling temperature (:func:`run_caption`). A model whose
parameters, samples or densities are not finite (a diverged run) gets no pictures: a one-line
warning on the ``jflows`` logger says why, and nothing is raised. The drawing itself lives in
:mod:`jflows.training.plots`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jflows.data import Dataset
from jflows.errors import JflowsError
from jflows.models.checked import checked_apply
from jflows.names import SAMPLE
from jflows.training.conditional_pictures import save_conditional_density
from jflows.training.figures import describe, read_figure
from jflows.training.metrics import evaluate_nll
from jflows.training.plots import (  # noqa: F401 - the drawing functions are public here too
    plot_range,
    save_density_1d,
    save_density_figure,
    save_histogram,
    save_image_grid,
    save_scatter,
    save_scatter_matrix,
    to_levels,
)
from jflows.training.state import TrainState
from jflows.training.step import EvalStep, make_eval_step

logger = logging.getLogger(__name__)

SAMPLE_CHUNK = 1000
"""Samples drawn per compiled call."""


def draw_samples(
    model: nn.Module,
    state: TrainState,
    n: int,
    key: jax.Array,
    chunk: int = SAMPLE_CHUNK,
    temperature: float = 1.0,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """``n`` samples of the model in data units (stream ``sample``), ``chunk`` at a time.

    ``temperature`` scales the standard deviation of the base (and of Glow's learned priors).
    A conditional model takes ``context``: sample ``i`` is drawn given row ``i`` (rows are
    repeated in turn when there are fewer than ``n``).
    Each chunk goes through :func:`jflows.models.checked_apply`, so a residual flow whose
    inverse does not converge raises :class:`~jflows.bijectors.InverseNotConvergedError`.

    Example:
        >>> from jflows.training import load_run
        >>> run = load_run("runs/moons")  # a run of jflows train
        >>> draw_samples(run.eval_model, run.state, 500, key).shape
        (500, 2)
    """
    size = min(n, chunk)
    variables = state.variables()
    if context is not None:  # pad to whole chunks, so every chunk compiles alike
        context = np.resize(np.asarray(context, np.float32), (math.ceil(n / size) * size,
                                                              *np.shape(context)[1:]))

    def args(i):
        rows = () if context is None else (context[i * size : (i + 1) * size],)
        return (size, float(temperature), *rows)

    parts = [  # checked_apply: a failed inverse raises InverseNotConvergedError, also jitted
        np.asarray(checked_apply(model, variables, *args(i), method="sample",
                                 rngs={SAMPLE: jax.random.fold_in(key, i)}))
        for i in range(math.ceil(n / size))
    ]
    return np.concatenate(parts)[:n]


def density_grid(
    eval_step: EvalStep,
    state: TrainState,
    bounds: tuple[tuple[float, float], ...],
    resolution: int = 200,
    batch_size: int = 1000,
) -> np.ndarray:
    """The model density ``exp(log p)`` on a ``resolution x resolution`` grid (rows = y).

    Uses the jitted per-example NLL, so the grid is evaluated in compiled batches.
    """
    xs = np.linspace(*bounds[0], resolution, dtype=np.float32)
    ys = np.linspace(*bounds[1], resolution, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    nll = evaluate_nll(eval_step, state, points, batch_size)
    return np.exp(-nll).reshape(resolution, resolution)



def density_curve(
    eval_step: EvalStep,
    state: TrainState,
    bounds: tuple[float, float],
    resolution: int = 400,
    batch_size: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """1-D data: the grid ``xs`` over ``bounds`` and the model density ``exp(log p(xs))``."""
    xs = np.linspace(*bounds, resolution, dtype=np.float32)
    nll = evaluate_nll(eval_step, state, xs[:, None], batch_size)
    return xs, np.exp(-nll)


def run_caption(
    model_name: str | None,
    step: int | None = None,
    record: dict[str, Any] | None = None,
    temperature: float | None = None,
) -> str:
    """The title line of a run's pictures: model, step, test figure and temperature.

    The test figure is bits/dim when the record has it (images), else the NLL; a bound is
    labelled as one (see :mod:`jflows.training.figures`).

    Example:
        >>> run_caption("glow", 40, {"test_bits_per_dim_bound": 1.2345}, temperature=0.7)
        'glow, step 40, test 1.2345 bits/dim (bound), T = 0.7'
        >>> run_caption("resflow", 10, {"test_nll": 2.5})
        'resflow, step 10, test NLL 2.5000 nats'
    """
    parts = [model_name] if model_name else []
    if step is not None:
        parts.append(f"step {step}")
    record = record or {}
    bpd, nll = read_figure(record, "test", "bits_per_dim"), read_figure(record, "test", "nll")
    if bpd is not None:
        bound = describe("test", "bits_per_dim", record).removeprefix("test bits/dim")
        parts.append(f"test {bpd:.4f} bits/dim{bound}")
    elif nll is not None:
        parts.append(f"{describe('test', 'nll', record)} {nll:.4f} nats")
    if temperature is not None:
        parts.append(f"T = {temperature:g}")
    return ", ".join(parts)


def _nonfinite_leaves(state: TrainState) -> int:
    """How many floating arrays of the state's variables hold a NaN or an infinity."""
    leaves = jax.tree.leaves(state.variables())
    return sum(
        1
        for leaf in leaves
        if jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact)
        and not bool(np.isfinite(np.asarray(leaf)).all())
    )


def save_samples_picture(
    path: str | os.PathLike,
    samples: np.ndarray,
    levels: int | None = None,
    title: str | None = None,
    data: np.ndarray | None = None,
) -> None:
    """A picture of samples of any kind: an image grid when ``levels`` is given, else by ``d``.

    1-D vectors get a histogram, 2-D a scatter plot, more a scatter matrix of the first
    :data:`~jflows.training.plots.MAX_MATRIX_DIMS` coordinates (over ``data``, when given).

    Example:
        >>> samples = np.random.default_rng(0).normal(size=(500, 2))
        >>> save_samples_picture("samples.png", samples, title="500 samples")  # a scatter plot
    """
    if levels is not None:
        save_image_grid(path, samples, levels, title)
    elif samples.shape[1] == 1:
        save_histogram(path, samples, title)
    elif samples.shape[1] == 2:
        bounds = None if data is None else plot_range(data)
        save_scatter(path, samples, bounds, title)
    else:
        save_scatter_matrix(path, samples, data, title)


def _one_line(err: BaseException) -> str:
    """The gist of an error in one line (a host callback's error is its last ``...Error:``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "Error: " in line]
    return (named or lines or [type(err).__name__])[-1]


def _skip(out_dir, why: str) -> list[str]:
    logger.warning("pictures of %s skipped: %s", os.fspath(out_dir), why)
    return []


def save_run_pictures(
    out_dir: str | os.PathLike,
    eval_model: nn.Module,
    state: TrainState,
    dataset: Dataset,
    *,
    key: jax.Array,
    eval_batch_size: int = 1000,
    n_samples: int | None = None,
    temperature: float = 1.0,
    model_name: str | None = None,
    step: int | None = None,
    record: dict[str, Any] | None = None,
) -> list[str]:
    """Writes a run's pictures: ``samples.png``, and ``density.png`` for 1-D and 2-D vectors.

    ``samples.png`` is an image grid (images), a histogram (1-D), a scatter plot (2-D) or a
    scatter matrix of the first four coordinates over the data (``d > 2``). ``density.png``
    shows the model density (a curve over histograms in 1-D; a heat map with a colour bar
    beside the data and samples in 2-D). Samples are drawn at ``temperature``. Titles name
    ``model_name``, ``step`` (default: the state's), the test figure of ``record`` (an
    evaluation record with ``test_nll`` or ``test_bits_per_dim``) and the temperature.

    Pictures of a non-finite model (parameters, samples or densities holding NaN or
    infinities; a non-converged inverse) are skipped with one warning on the logger
    ``jflows.training.pictures``; nothing is raised.

    Returns:
        The paths written.

    Example:
        >>> from jflows.training import load_run
        >>> run = load_run("runs/moons")  # a run of jflows train on 2-D data
        >>> dataset = jflows.data.load_dataset("moons", n_train=1000, n_test=100)
        >>> save_run_pictures("runs/moons", run.eval_model, run.state, dataset, key=key,
        ...                   n_samples=500, model_name="realnvp")
        ['runs/moons/samples.png', 'runs/moons/density.png']
    """
    step = int(state.step) if step is None else step
    bad = _nonfinite_leaves(state)
    if bad:
        return _skip(out_dir, f"{bad} parameter arrays are not finite (the run diverged)")
    n = n_samples or (64 if dataset.is_image else 5000)
    context = dataset.test_context  # conditional: one sample per test context (repeated)
    try:
        samples = draw_samples(eval_model, state, n, key, temperature=temperature,
                               context=context)
    except (JflowsError, jax.errors.JaxRuntimeError) as err:
        return _skip(out_dir, f"sampling failed ({_one_line(err)})")
    finite_rows = np.isfinite(samples.reshape(len(samples), -1)).all(axis=1)
    if not finite_rows.all():
        lost = int((~finite_rows).sum())
        return _skip(out_dir, f"{lost} of {len(samples)} samples are not finite")
    samples_path = os.path.join(out_dir, "samples.png")
    title = run_caption(model_name, step, record, temperature)
    if dataset.is_image:
        save_image_grid(samples_path, samples, dataset.levels, title)
        return [samples_path]
    written = []
    d = dataset.dims
    density_path = os.path.join(out_dir, "density.png")
    if d == 2 and context is not None:  # p(x | c) at three contexts
        written += save_conditional_density(density_path, eval_model, state, dataset,
                                            eval_batch_size=eval_batch_size, title=title)
    elif d <= 2 and context is None:
        eval_step = make_eval_step(eval_model)
        bounds = plot_range(dataset.train, dims=d)
        if d == 1:
            xs, density = density_curve(eval_step, state, bounds[0], batch_size=eval_batch_size)
        else:
            density = density_grid(eval_step, state, bounds, batch_size=eval_batch_size)
        if np.isfinite(density).all():
            if d == 1:
                save_density_1d(density_path, xs, density, dataset.train, samples, title)
            else:
                save_density_figure(density_path, density, bounds, dataset.train, samples, title)
            written.append(density_path)
        else:
            _skip(out_dir, f"density.png only: {int((~np.isfinite(density)).sum())} density "
                  f"values on the grid are not finite")
    save_samples_picture(samples_path, samples, None, title, data=dataset.train)
    return [samples_path, *written]
