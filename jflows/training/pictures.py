"""Pictures of a trained flow: density and samples for 2-D data, a sample grid for images.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
``pyplot``, so nothing here changes the caller's matplotlib backend or global state.
"""

from __future__ import annotations

import math
import os

import flax.linen as nn
import jax
import numpy as np
from matplotlib.figure import Figure

from jflows.data import Dataset
from jflows.models.checked import checked_apply
from jflows.names import SAMPLE
from jflows.training.metrics import evaluate_nll
from jflows.training.state import TrainState
from jflows.training.step import EvalStep, make_eval_step

SAMPLE_CHUNK = 1000
"""Samples drawn per compiled call."""


def draw_samples(
    model: nn.Module,
    state: TrainState,
    n: int,
    key: jax.Array,
    chunk: int = SAMPLE_CHUNK,
    temperature: float = 1.0,
) -> np.ndarray:
    """``n`` samples of the model in data units (stream ``sample``), ``chunk`` at a time.

    ``temperature`` scales the standard deviation of the base (and of Glow's learned priors).
    Each chunk goes through :func:`jflows.models.checked_apply`, so a residual flow whose
    inverse does not converge raises :class:`~jflows.bijectors.InverseNotConvergedError`.

    Example:
        >>> x = draw_samples(flow, state, 500, jax.random.key(0))
    """
    size = min(n, chunk)
    variables = state.variables()
    parts = [  # checked_apply: a failed inverse raises InverseNotConvergedError, also jitted
        np.asarray(checked_apply(model, variables, size, float(temperature), method="sample",
                                 rngs={SAMPLE: jax.random.fold_in(key, i)}))
        for i in range(math.ceil(n / size))
    ]
    return np.concatenate(parts)[:n]


def to_levels(x: np.ndarray, levels: int) -> np.ndarray:
    """Continuous image samples in ``[0, levels)`` to integer levels (uint8), clipping first."""
    return np.floor(np.clip(np.asarray(x), 0.0, levels - 1.0)).astype(np.uint8)


def plot_range(data: np.ndarray, margin: float = 0.1) -> tuple[tuple[float, float], ...]:
    """Per-axis plotting bounds of 2-D data: 0.5-99.5 percentiles widened by ``margin``."""
    lo, hi = np.percentile(data[:, :2], [0.5, 99.5], axis=0)
    pad = margin * (hi - lo) + 1e-6
    return tuple((float(a - p), float(b + p)) for a, b, p in zip(lo, hi, pad))


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


def _scatter(ax, points, bounds, title):
    ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0.3, linewidths=0)
    ax.set_xlim(*bounds[0])
    ax.set_ylim(*bounds[1])
    ax.set_aspect("equal")
    ax.set_title(title)


def save_density_figure(
    path: str | os.PathLike,
    density: np.ndarray,
    bounds: tuple[tuple[float, float], ...],
    data: np.ndarray,
    samples: np.ndarray,
) -> None:
    """Three panels: the model density heat map, data (2-D histogram), model samples.

    Example:
        >>> bounds = plot_range(x_train)
        >>> save_density_figure("density.png", density_grid(step, state, bounds), bounds,
        ...                     x_train, draw_samples(flow, state, 5000, key))
    """
    fig = Figure(figsize=(12, 4), dpi=100)
    axes = fig.subplots(1, 3)
    extent = (*bounds[0], *bounds[1])
    axes[0].imshow(density, origin="lower", extent=extent, cmap="viridis", aspect="equal")
    axes[0].set_title("model density")
    axes[1].hist2d(data[:, 0], data[:, 1], bins=100, range=bounds, cmap="viridis")
    axes[1].set_aspect("equal")
    axes[1].set_title("data")
    _scatter(axes[2], samples, bounds, "model samples")
    fig.tight_layout()
    fig.savefig(path)


def save_scatter(
    path: str | os.PathLike,
    samples: np.ndarray,
    bounds: tuple[tuple[float, float], ...] | None = None,
) -> None:
    """A scatter plot of the first two coordinates of vector samples."""
    bounds = plot_range(samples) if bounds is None else bounds
    fig = Figure(figsize=(5, 5), dpi=100)
    _scatter(fig.subplots(), samples, bounds, f"{len(samples)} model samples")
    fig.tight_layout()
    fig.savefig(path)


def save_image_grid(path: str | os.PathLike, images: np.ndarray, levels: int) -> None:
    """A square grid of ``(N, H, W, C)`` images in ``[0, levels)``, clipped to valid levels.

    One channel is shown in grey, three as RGB, and otherwise the first channel.

    Example:
        >>> save_image_grid("samples.png", draw_samples(flow, state, 64, key), levels=17)
    """
    x = to_levels(images, levels).astype(np.float32) / (levels - 1)
    n, h, w, c = x.shape
    if c != 3:
        x = x[..., :1]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, x.shape[-1]), np.float32)
    for i in range(n):
        top, left = 1 + (i // cols) * (h + 1), 1 + (i % cols) * (w + 1)
        canvas[top : top + h, left : left + w] = x[i]
    fig = Figure(figsize=(max(2.0, cols * 0.6), max(2.0, rows * 0.6)), dpi=100)
    ax = fig.subplots()
    if canvas.shape[-1] == 1:
        ax.imshow(canvas[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    fig.savefig(path)


def save_samples_picture(
    path: str | os.PathLike, samples: np.ndarray, levels: int | None = None
) -> None:
    """``samples.png``: an image grid when ``levels`` is given, a scatter plot otherwise."""
    if levels is not None:
        save_image_grid(path, samples, levels)
    else:
        save_scatter(path, samples)


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
) -> list[str]:
    """Writes a run's pictures: ``samples.png``, and ``density.png`` for 2-D data.

    ``samples.png`` is an image grid (images) or a scatter plot (vectors with ``d >= 2``);
    ``density.png`` shows the density, the data and samples side by side. Samples are drawn
    at ``temperature``.

    Returns:
        The paths written.
    """
    written = []
    samples_path = os.path.join(out_dir, "samples.png")
    if dataset.is_image:
        images = draw_samples(eval_model, state, n_samples or 64, key, temperature=temperature)
        save_image_grid(samples_path, images, dataset.levels)
        return [samples_path]
    if dataset.dims < 2:
        return written
    samples = draw_samples(eval_model, state, n_samples or 5000, key, temperature=temperature)
    bounds = plot_range(dataset.train)
    save_scatter(samples_path, samples, bounds)
    written.append(samples_path)
    if dataset.dims == 2:
        eval_step = make_eval_step(eval_model)
        density = density_grid(eval_step, state, bounds, batch_size=eval_batch_size)
        density_path = os.path.join(out_dir, "density.png")
        save_density_figure(density_path, density, bounds, dataset.train, samples)
        written.append(density_path)
    return written
