"""``density.png`` of a conditional 2-D run: the model density ``p(x | c)`` at three contexts.

The contexts are the test rows at the 10%, 50% and 90% quantiles of the first context
coordinate; each panel shows the model density on a grid given that context, with the test
points whose contexts are nearest to it (the closest 5%) on top, so a model that ignores its
context is visibly wrong.

Example (after ``jflows train --model realnvp --data conditional-ring --out runs/ring``; not
run here)::

    run = load_run("runs/ring")
    dataset = jflows.data.load_dataset("conditional-ring", n_train=1000, n_test=500)
    save_conditional_density("density.png", run.eval_model, run.state, dataset)
"""

from __future__ import annotations

import logging
import os

import numpy as np

from jflows.data import Dataset
from jflows.training.metrics import evaluate_nll
from jflows.training.plots import new_figure, plot_range
from jflows.training.state import TrainState
from jflows.training.step import make_eval_step

logger = logging.getLogger(__name__)

QUANTILES = (0.1, 0.5, 0.9)
"""Quantiles of the first context coordinate at which the density is drawn."""


def conditional_density_grid(
    eval_step, state: TrainState, bounds, context: np.ndarray, resolution: int = 150,
    batch_size: int = 1000,
) -> np.ndarray:
    """``p(x | context)`` on a ``resolution x resolution`` grid over ``bounds`` (rows = y)."""
    xs = np.linspace(*bounds[0], resolution, dtype=np.float32)
    ys = np.linspace(*bounds[1], resolution, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    rows = np.repeat(np.asarray(context, np.float32)[None], len(points), axis=0)
    nll = evaluate_nll(eval_step, state, (points, rows), batch_size)
    return np.exp(-nll).reshape(resolution, resolution)


def save_conditional_density(
    path: str | os.PathLike,
    eval_model,
    state: TrainState,
    dataset: Dataset,
    *,
    eval_batch_size: int = 1000,
    title: str | None = None,
) -> list[str]:
    """Writes the three-panel picture to ``path``; returns ``[path]`` (``[]`` if not finite)."""
    x, c = dataset.test, dataset.test_context
    order = np.argsort(c[:, 0], kind="stable")
    chosen = [order[int(q * (len(c) - 1))] for q in QUANTILES]
    bounds = plot_range(dataset.train)
    eval_step = make_eval_step(eval_model)
    scale = c.std(axis=0) + 1e-12
    fig = new_figure((13, 4.4))
    for ax, row in zip(fig.subplots(1, len(chosen)), chosen, strict=True):
        density = conditional_density_grid(eval_step, state, bounds, c[row],
                                           batch_size=eval_batch_size)
        if not np.isfinite(density).all():
            logger.warning("density.png skipped: the density given c = %s is not finite", c[row])
            return []
        ax.imshow(density, origin="lower", extent=(*bounds[0], *bounds[1]), cmap="viridis",
                  aspect="equal")
        distance = np.linalg.norm((c - c[row]) / scale, axis=1)
        near = distance <= np.quantile(distance, 0.05)
        ax.scatter(x[near, 0], x[near, 1], s=2, c="white", alpha=0.6, linewidths=0)
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
        shown = ", ".join(f"{v:.2f}" for v in c[row][:3])
        ax.set_title(f"p(x | c = {shown}); dots: {int(near.sum())} test rows of nearby c",
                     fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return [os.fspath(path)]
