"""Binary masks for coupling layers.

A mask entry of 1 marks a feature that is kept (and fed to the conditioner); 0 marks a feature
that is transformed.

* ``"half"`` (vectors): the first ``ceil(d/2)`` features are kept; ``parity=1`` flips it.
* ``"alternate"`` (vectors): even indices kept; ``parity=1`` keeps odd indices.
* ``"checkerboard"`` (images ``(H, W, C)``): pixel ``(i, j)`` kept when ``i + j + parity`` is
  even, for all channels.
* ``"channel"`` (images): the first ``C/2`` channels kept; ``parity=1`` flips it.
"""

from __future__ import annotations

import numpy as np

from jflows.errors import ConfigError, ShapeError

MASK_EVENT_NDIMS = {"half": 1, "alternate": 1, "checkerboard": 3, "channel": 3}


def mask_event_ndims(kind) -> int:
    """Event rank a mask kind (or an explicit mask array) applies to."""
    if isinstance(kind, str):
        if kind not in MASK_EVENT_NDIMS:
            raise ConfigError(
                f"unknown mask {kind!r}; choose one of {tuple(MASK_EVENT_NDIMS)} "
                f"or pass a 0/1 numpy array of the event's shape"
            )
        return MASK_EVENT_NDIMS[kind]
    return np.asarray(kind).ndim


def make_mask(kind, event_shape: tuple[int, ...], parity: int = 0) -> np.ndarray:
    """Builds a float mask of ``event_shape`` (see the module docstring for the kinds).

    Example:
        >>> make_mask("checkerboard", (2, 2, 1))[..., 0]
        array([[1., 0.],
               [0., 1.]], dtype=float32)
    """
    if not isinstance(kind, str):
        mask = np.asarray(kind, dtype=np.float32)
        if mask.shape != tuple(event_shape):
            raise ShapeError(f"mask of shape {mask.shape} does not match events {event_shape}")
        return 1.0 - mask if parity else mask
    ndims = mask_event_ndims(kind)
    if len(event_shape) != ndims:
        raise ShapeError(
            f"mask {kind!r} is for events of rank {ndims}, got event shape {tuple(event_shape)}"
        )
    if kind == "half":
        d = event_shape[0]
        mask = (np.arange(d) < (d + 1) // 2).astype(np.float32)
    elif kind == "alternate":
        mask = (np.arange(event_shape[0]) % 2 == 0).astype(np.float32)
    elif kind == "checkerboard":
        h, w, c = event_shape
        board = (np.add.outer(np.arange(h), np.arange(w)) % 2 == 0).astype(np.float32)
        mask = np.repeat(board[:, :, None], c, axis=2)
    else:  # channel
        h, w, c = event_shape
        mask = np.broadcast_to((np.arange(c) < (c + 1) // 2).astype(np.float32), (h, w, c))
    return 1.0 - mask if parity else np.array(mask)
