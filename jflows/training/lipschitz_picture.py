r"""A picture of a 2-D flow's local Lipschitz constants over the plane (``lipschitz.png``).

Left: :math:`\log_{10}\|J_f(x)\|_2`, the local Lipschitz estimate of the data-to-latent map
at each grid point ``x``; right: :math:`\log_{10}\|J_{f^{-1}}(f(x))\|_2`, that of the
inverse at the image of ``x``. Both come from :func:`jflows.models.bi_lipschitz` (power
iteration), with the data drawn over them. A flow that separates disconnected modes shows
ridges of large inverse constants between them.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import numpy as np

from jflows.errors import ShapeError
from jflows.models.lipschitz_report import bi_lipschitz
from jflows.training.plots import Bounds, _finish, _scatter, new_figure

LIPSCHITZ_PICTURE = "lipschitz.png"


def lipschitz_grid(
    flow: nn.Module,
    variables: dict,
    bounds: Bounds,
    resolution: int = 100,
    *,
    key: jax.Array,
    iterations: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Local Lipschitz estimates of ``f`` and ``f^-1`` on a ``resolution`` square grid.

    Returns two ``(resolution, resolution)`` arrays (rows = y): ``Lip(f)`` at each grid point
    ``x`` and ``Lip(f^-1)`` at ``f(x)``.

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> variables = flow.init(key, jnp.zeros((1, 2)))
        >>> from jflows.training.lipschitz_picture import lipschitz_grid
        >>> fwd, inv = lipschitz_grid(flow, variables, ((-2, 2), (-2, 2)), 20, key=key)
        >>> fwd.shape, bool((fwd > 0).all())
        ((20, 20), True)
    """
    if tuple(flow.event_shape) != (2,):
        raise ShapeError(
            f"the Lipschitz picture is for 2-D vector models, got event_shape "
            f"{tuple(flow.event_shape)}; use jflows.models.bi_lipschitz for the figures"
        )
    xs = np.linspace(*bounds[0], resolution, dtype=np.float32)
    ys = np.linspace(*bounds[1], resolution, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    report = bi_lipschitz(flow, variables, points, iterations=iterations, key=key,
                          batch_size=min(len(points), 2500))
    shape = (resolution, resolution)
    return report.forward.values.reshape(shape), report.inverse.values.reshape(shape)


def save_lipschitz_picture(
    path: str | os.PathLike,
    forward: np.ndarray,
    inverse: np.ndarray,
    bounds: Bounds,
    data: np.ndarray | None = None,
    title: str | None = None,
) -> None:
    """Draws the two grids of :func:`lipschitz_grid` as ``log10`` heat maps (data on top).

    Example:
        >>> grid = np.ones((50, 50))
        >>> from jflows.training.lipschitz_picture import save_lipschitz_picture
        >>> save_lipschitz_picture("lipschitz.png", 2 * grid, grid, ((-1, 1), (-1, 1)))
    """
    from mpl_toolkits.axes_grid1 import make_axes_locatable  # with matplotlib, on first use

    fig = new_figure((10, 4.4))
    axes = fig.subplots(1, 2)
    extent = (*bounds[0], *bounds[1])
    tiny = np.finfo(np.float64).tiny
    panels = ((forward, "local Lip(f) at x"), (inverse, "local Lip(f^-1) at f(x)"))
    for ax, (grid, name) in zip(axes, panels):
        values = np.log10(np.maximum(np.asarray(grid, np.float64), tiny))
        image = ax.imshow(values, origin="lower", extent=extent, cmap="magma", aspect="equal")
        bar_ax = make_axes_locatable(ax).append_axes("right", size="5%", pad=0.08)
        fig.colorbar(image, cax=bar_ax, label="log10")
        if data is not None:
            _scatter(ax, np.asarray(data)[:2000], bounds, color="cyan", s=1, alpha=0.25)
        ax.set_title(f"{name} (max {np.max(grid):.3g})", fontsize=9)
    _finish(fig, path, title)
