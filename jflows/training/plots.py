"""Drawing a run's pictures from arrays: densities, histograms, scatter plots, image grids.

Every function takes plain numpy arrays (no model) and writes one file. Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, never through ``pyplot``, so nothing
here changes the caller's matplotlib backend or global state. ``title`` is a line naming what
the picture shows (see :func:`jflows.training.pictures.run_caption`).

Example:
    >>> x = np.random.default_rng(0).normal(size=(500, 5))
    >>> save_scatter_matrix("samples.png", x, title="realnvp, step 5000")
    >>> import os
    >>> os.path.exists("samples.png")
    True
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_MATRIX_DIMS = 4
"""A scatter matrix of vectors shows at most this many leading coordinates."""
MAX_MATRIX_ROWS = 5000
"""At most this many data rows are drawn under the samples of a scatter matrix."""

Bounds = tuple[tuple[float, float], ...]


def to_levels(x: np.ndarray, levels: int) -> np.ndarray:
    """Continuous image samples in ``[0, levels)`` to integer levels (uint8), clipping first."""
    return np.floor(np.clip(np.asarray(x), 0.0, levels - 1.0)).astype(np.uint8)


def plot_range(data: np.ndarray, margin: float = 0.1, dims: int = 2) -> Bounds:
    """Per-axis plotting bounds of the first ``dims`` coordinates of ``(N, d)`` data.

    The 0.5-99.5 percentiles, widened by ``margin`` times their spread.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(1000, 2))
        >>> (x_lo, x_hi), (y_lo, y_hi) = plot_range(x)
        >>> x_lo < -2.6 < 2.6 < x_hi  # the 0.5-99.5 percentiles are about -2.6 and 2.6
        True
    """
    lo, hi = np.percentile(np.asarray(data)[:, :dims], [0.5, 99.5], axis=0)
    pad = margin * (hi - lo) + 1e-6
    return tuple((float(a - p), float(b + p)) for a, b, p in zip(lo, hi, pad))


def new_figure(figsize: tuple[float, float], dpi: int = 100) -> Figure:
    """A ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot).

    matplotlib is imported here, on the first picture, not with jflows (~0.4 s and ~30 MB).
    """
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)


def _finish(fig: Figure, path, title: str | None) -> None:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _scatter(ax, points, bounds, title=None, **kw):
    style = dict(s=1, alpha=0.3, linewidths=0)
    ax.scatter(points[:, 0], points[:, 1], **{**style, **kw})
    ax.set_xlim(*bounds[0])
    ax.set_ylim(*bounds[1])
    if title:
        ax.set_title(title, fontsize=9)


def save_density_figure(
    path: str | os.PathLike,
    density: np.ndarray,
    bounds: Bounds,
    data: np.ndarray,
    samples: np.ndarray,
    title: str | None = None,
) -> None:
    """2-D data, three panels: the model density (with a colour bar), the data, model samples.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> data, samples = rng.normal(size=(1000, 2)), rng.normal(size=(500, 2))
        >>> bounds = plot_range(data)
        >>> xs, ys = np.linspace(*bounds[0], 100), np.linspace(*bounds[1], 100)
        >>> density = np.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2) / 2) / (2 * np.pi)  # rows: y
        >>> save_density_figure("density.png", density, bounds, data, samples, title="N(0, I)")

        A model's density on such a grid: :func:`jflows.training.pictures.density_grid`.
    """
    fig = new_figure((13, 4.4))
    axes = fig.subplots(1, 3)
    extent = (*bounds[0], *bounds[1])
    image = axes[0].imshow(density, origin="lower", extent=extent, cmap="viridis", aspect="equal")
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    bar_ax = make_axes_locatable(axes[0]).append_axes("right", size="5%", pad=0.08)
    fig.colorbar(image, cax=bar_ax, label="p(x)")
    axes[0].set_title("model density", fontsize=9)
    axes[1].hist2d(data[:, 0], data[:, 1], bins=100, range=bounds, cmap="viridis")
    axes[1].set_aspect("equal")
    axes[1].set_title(f"data ({len(data)} training rows)", fontsize=9)
    _scatter(axes[2], samples, bounds, f"{len(samples)} model samples")
    axes[2].set_aspect("equal")
    _finish(fig, path, title)


def save_density_1d(
    path: str | os.PathLike,
    grid: np.ndarray,
    density: np.ndarray,
    data: np.ndarray,
    samples: np.ndarray,
    title: str | None = None,
) -> None:
    """1-D data: the model density curve over histograms of the data and of model samples.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> grid = np.linspace(-4.0, 4.0, 200)
        >>> density = np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi)
        >>> save_density_1d("density.png", grid, density, rng.normal(size=(1000, 1)),
        ...                 rng.normal(size=(500, 1)), title="N(0, 1)")
    """
    fig = new_figure((7, 4.4))
    ax = fig.subplots()
    lo, hi = float(grid[0]), float(grid[-1])
    bins = np.linspace(lo, hi, 80)
    ax.hist(data[:, 0], bins=bins, density=True, color="0.75", label=f"data ({len(data)} rows)")
    ax.hist(samples[:, 0], bins=bins, density=True, histtype="step", color="tab:orange",
            label=f"{len(samples)} model samples")
    ax.plot(grid, density, color="tab:blue", lw=2, label="model density")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    _finish(fig, path, title)


def save_histogram(
    path: str | os.PathLike, samples: np.ndarray, title: str | None = None
) -> None:
    """A histogram of 1-D samples ``(N, 1)``."""
    fig = new_figure((6, 4))
    ax = fig.subplots()
    (lo, hi), = plot_range(samples, dims=1)
    ax.hist(samples[:, 0], bins=np.linspace(lo, hi, 80), density=True, color="tab:orange")
    ax.set_xlabel("x")
    ax.set_ylabel(f"density of {len(samples)} samples")
    _finish(fig, path, title)


def save_scatter(
    path: str | os.PathLike,
    samples: np.ndarray,
    bounds: Bounds | None = None,
    title: str | None = None,
) -> None:
    """A scatter plot of 2-D samples ``(N, 2)``."""
    bounds = plot_range(samples) if bounds is None else bounds
    (x0, x1), (y0, y1) = bounds
    ratio = min(max((x1 - x0) / max(y1 - y0, 1e-12), 0.5), 2.0)  # equal axes, little blank
    fig = new_figure((5.5, 5.5 / ratio + 0.6))
    ax = fig.subplots()
    _scatter(ax, samples, bounds, f"{len(samples)} model samples")
    ax.set_aspect("equal")
    _finish(fig, path, title)


def save_scatter_matrix(
    path: str | os.PathLike,
    samples: np.ndarray,
    data: np.ndarray | None = None,
    title: str | None = None,
    max_dims: int = MAX_MATRIX_DIMS,
) -> None:
    """Vectors with ``d > 2``: pairwise scatter plots of the first ``min(d, max_dims)`` dims.

    Samples (blue) fill the plots above the diagonal and the data (grey, when given) those below
    it, so neither hides the other; the diagonal holds histograms of both.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> samples, data = rng.normal(size=(500, 6)), rng.normal(size=(1000, 6))
        >>> save_scatter_matrix("samples.png", samples, data=data, title="resflow")
    """
    d = samples.shape[1]
    k = min(d, max_dims)
    if data is not None and len(data) > MAX_MATRIX_ROWS:  # evenly spaced rows: deterministic
        data = data[:: math.ceil(len(data) / MAX_MATRIX_ROWS)]
    bounds = plot_range(samples if data is None else data, dims=k)
    fig = new_figure((2.3 * k, 2.3 * k + 0.4))
    axes = fig.subplots(k, k, squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if i == j:
                bins = np.linspace(*bounds[i], 50)
                if data is not None:
                    ax.hist(data[:, i], bins=bins, density=True, color="0.75")
                ax.hist(samples[:, i], bins=bins, density=True, histtype="step",
                        color="tab:blue")
                ax.set_xlim(*bounds[i])
                ax.set_yticks([])
            else:
                pair = (bounds[j], bounds[i])
                if data is not None and i > j:  # data below the diagonal, samples above
                    _scatter(ax, data[:, [j, i]], pair, color="0.25", s=2, alpha=0.5)
                else:
                    _scatter(ax, samples[:, [j, i]], pair, color="tab:blue")
            if i == k - 1:
                ax.set_xlabel(f"x{j + 1}")
            if j == 0:
                ax.set_ylabel(f"x{i + 1}")
            ax.tick_params(labelsize=6)
    shown = f"dims 1-{k} of {d}" if k < d else f"all {d} dims"
    legend = f"{len(samples)} samples (blue)"
    if data is not None:
        legend = f"{legend} above the diagonal, {len(data)} data rows (grey) below it"
    head = f"{title}\n" if title else ""
    _finish(fig, path, f"{head}{legend}, {shown}")


def save_image_grid(
    path: str | os.PathLike, images: np.ndarray, levels: int, title: str | None = None
) -> None:
    """A square grid of ``(N, H, W, C)`` images in ``[0, levels)``, clipped to valid levels.

    One channel is shown in grey, three as RGB, and otherwise the first channel.

    Example:
        >>> samples = np.random.default_rng(0).uniform(0, 17, size=(16, 8, 8, 1))
        >>> save_image_grid("samples.png", samples, levels=17, title="glow, step 1000, T = 0.7")
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
    width = max(3.5, cols * 0.6)
    fig = new_figure((width, max(2.0, rows * 0.6) + (0.6 if title else 0.0)))
    ax = fig.subplots()
    if canvas.shape[-1] == 1:
        ax.imshow(canvas[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8 if width < 5 else 10)
    fig.tight_layout(pad=0.2)
    fig.savefig(path)
