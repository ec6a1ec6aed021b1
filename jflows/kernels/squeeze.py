"""Space-to-depth squeeze of channels-last images, with a fixed documented channel order.

``squeeze`` maps ``(..., H, W, C)`` to ``(..., H/f, W/f, C f^2)``. Output channel
``c * f^2 + dy * f + dx`` at position ``(i, j)`` holds input pixel ``(f i + dy, f j + dx)`` of
channel ``c``: the order of the Residual Flows code (``layers/squeeze.py``) and of PyTorch's
``pixel_unshuffle``. It is a permutation, so its log-determinant is 0.
"""

from __future__ import annotations

import jax

from jflows.errors import ShapeError


def squeeze(x: jax.Array, factor: int = 2) -> jax.Array:
    """Space-to-depth: ``(..., H, W, C) -> (..., H/f, W/f, C f^2)``.

    Example:
        >>> z = squeeze(jnp.arange(16.0).reshape(4, 4, 1))
        >>> z.shape
        (2, 2, 4)
        >>> z[0, 0]  # the top-left 2x2 patch, row by row
        Array([0., 1., 4., 5.], dtype=float32)
    """
    *lead, h, w, c = x.shape
    if h % factor or w % factor:
        raise ShapeError(
            f"squeeze by {factor} needs height and width divisible by {factor}, got {h}x{w}; "
            f"crop or pad the images, or use fewer levels"
        )
    n = len(lead)
    x = x.reshape((*lead, h // factor, factor, w // factor, factor, c))
    # axes: lead, h', dy, w', dx, c  ->  lead, h', w', c, dy, dx
    x = x.transpose((*range(n), n, n + 2, n + 4, n + 1, n + 3))
    return x.reshape((*lead, h // factor, w // factor, c * factor * factor))


def unsqueeze(x: jax.Array, factor: int = 2) -> jax.Array:
    """Depth-to-space, the inverse of :func:`squeeze`."""
    *lead, h, w, c = x.shape
    if c % (factor * factor):
        raise ShapeError(
            f"unsqueeze by {factor} needs channels divisible by {factor * factor}, got {c}"
        )
    n = len(lead)
    c0 = c // (factor * factor)
    x = x.reshape((*lead, h, w, c0, factor, factor))
    # axes: lead, h, w, c0, dy, dx -> lead, h, dy, w, dx, c0
    x = x.transpose((*range(n), n, n + 3, n + 1, n + 4, n + 2))
    return x.reshape((*lead, h * factor, w * factor, c0))
