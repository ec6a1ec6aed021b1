"""The RealNVP vector couplings that the surjective vector models put behind their first layer.

``absolute`` and ``augmented`` (and any later model of the same shape) accept realnvp's
coupling keywords and forward them unchanged; the names live here once, so a new coupling
option is added in one place (and in the factories' signatures, which stay explicit for the
CLI's ``--opt`` checks and for readers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jflows.bijectors import Bijector
from jflows.models.realnvp import realnvp

COUPLING_OPTIONS = ("n_couplings", "hidden", "scale_map", "actnorm", "unroll")
"""The keywords of :func:`~jflows.models.realnvp` that the surjective vector models forward."""


def vector_couplings(
    event_shape: Sequence[int], dtype: str, arguments: Mapping[str, Any]
) -> Bijector:
    r"""The bijector of ``realnvp(event_shape, **options, dtype=dtype)`` for vectors.

    ``options`` are the entries of ``arguments`` named in :data:`COUPLING_OPTIONS` (a
    factory passes its own arguments, e.g. ``locals()``; other entries are ignored).

    Args:
        event_shape: ``(d,)`` of the couplings' input (``d >= 2``).
        dtype: ``"float32"`` or ``"float64"`` (already checked by the caller).
        arguments: a mapping holding at least every name of :data:`COUPLING_OPTIONS`.

    Returns:
        The couplings, a :class:`~jflows.bijectors.Bijector` (no base, no pre-processing).

    Example:
        >>> settings = dict(n_couplings=2, hidden=(8,), scale_map="tanh", actnorm=False,
        ...                 unroll=True, learned_signs=True)
        >>> core = vector_couplings((2,), "float32", settings)
        >>> type(core).__name__
        'Chain'
    """
    missing = [name for name in COUPLING_OPTIONS if name not in arguments]
    if missing:
        raise TypeError(f"vector_couplings: arguments lacks {missing}")
    options = {name: arguments[name] for name in COUPLING_OPTIONS}
    return realnvp(event_shape, **options, dtype=dtype).bijector
