r"""Which bijective map of a flow the bi-Lipschitz diagnostics measure, as Flax methods.

* A bijective flow: its data-to-latent map ``f`` and ``f^{-1}``.
* A flow whose layers start with dequantizers (image runs): the bijective rest, from the
  dequantized ``k + u`` to ``z``; ``prepare`` draws the dequantization (stream ``dequant``).
* A continuously indexed flow (CIF): the per-index map ``F(.; u)`` with every layer's index
  held fixed at the mean of the approximate posterior ``q(u_l | x_{l-1})`` at the point
  (``index="mean"``, the default: the index the model expects there) or at a draw from it
  (``index="sample"``, stream ``noise``). For fixed ``u`` the map is a bijection, and its
  Lipschitz constants are the ones the CIF paper's argument is about: the index lets the map
  stay well-conditioned where a plain flow's cannot. Draws add the spread of ``q``, which away
  from the data is as wide as the prior's, so their maxima over a grid are set by a few indices
  from the tails (a speckled picture); the mean gives the smooth field.

Any other non-bijective layer raises :class:`~jflows.errors.NotBijectiveError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from jflows.bijectors import Chain, IndexedBijection, Kind
from jflows.errors import ConfigError, NotBijectiveError
from jflows.models.flow import Flow
from jflows.names import DEQUANT, NOISE

INDEX_CHOICES = ("sample", "mean")


@dataclasses.dataclass(frozen=True)
class MeasuredMap:
    """Flax methods of the map measured (call with ``flow.apply(variables, ..., method=)``).

    Attributes:
        forward: ``(module, e, args) -> z`` (``args`` None or the indices).
        inverse: ``(module, z, args) -> e``.
        prepare: ``(module, x) -> (e, args)`` drawing from ``stream``; None when ``x`` is
            measured as given.
        stream: the RNG stream ``prepare`` draws from.
        description: what is measured, in words (for reports).
    """

    forward: Callable
    inverse: Callable
    prepare: Callable | None
    stream: str | None
    description: str


def _layers(flow: Flow) -> list:
    return list(flow.bijector.bijectors) if isinstance(flow.bijector, Chain) else []


def _not_bijective(flow: Flow, bad: list[str]) -> NotBijectiveError:
    where = f" (its layers {', '.join(bad)})" if bad else ""
    return NotBijectiveError(
        f"bi_lipschitz needs a bijective map, but this flow is a "
        f"{flow.kind.name.lower().replace('_', ' ')}{where}, so f has no inverse to measure; "
        f"pass a model built from its bijective layers only (e.g. the flow inside an "
        f"absolute/augmented/max-pool model, or preprocessing=image_preprocessing(levels)[1:] "
        f"evaluated on dequantized data)"
    )


def _cast(flow: Flow, a):
    return a if flow.dtype is None else jnp.asarray(a, flow.dtype)


def _plain(flow: Flow, skip: int) -> MeasuredMap:
    """``f`` after the first ``skip`` layers (dequantizers, drawn by ``prepare``)."""
    def forward(m, e, args=None):
        e = _cast(flow, e)
        for layer in m.bijector.bijectors[skip:] if skip else (m,):
            e = layer.forward(e)
        return e

    def inverse(m, e, args=None):
        e = _cast(flow, e)
        for layer in reversed(m.bijector.bijectors[skip:]) if skip else (m,):
            e = layer.inverse(e)
        return e

    if not skip:
        return MeasuredMap(forward, inverse, None, None, "f: data -> latent")

    def dequantize(m, k):
        x = _cast(flow, k)
        for layer in m.bijector.bijectors[:skip]:
            x = layer.forward(x)
        return x, None

    return MeasuredMap(forward, inverse, dequantize, DEQUANT, "f: dequantized data -> latent")


def _indexed(flow: Flow, index: str) -> MeasuredMap:
    """``F(.; u)`` of a CIF with the indices ``u`` drawn (or averaged) from ``q(u | x)``."""
    def prepare(m, x):
        e, indices = _cast(flow, x), []
        for layer in m.bijector.bijectors:
            if isinstance(layer, IndexedBijection):
                if index == "mean":
                    u = layer.posterior.mean_and_log_scale(e, layer.index_dims)[0]
                else:
                    u = layer.posterior.sample(m.make_rng(NOISE), e, layer.index_dims)
                indices.append(u)
                e = layer.indexed_forward(e, u)
            else:
                e = layer.forward(e)
        return x, tuple(indices)

    def forward(m, e, indices):
        e, it = _cast(flow, e), iter(indices)
        for layer in m.bijector.bijectors:
            is_indexed = isinstance(layer, IndexedBijection)
            e = layer.indexed_forward(e, next(it)) if is_indexed else layer.forward(e)
        return e

    def inverse(m, e, indices):
        e, it = _cast(flow, e), iter(reversed(indices))
        for layer in reversed(m.bijector.bijectors):
            is_indexed = isinstance(layer, IndexedBijection)
            e = layer.indexed_inverse(e, next(it)) if is_indexed else layer.inverse(e)
        return e

    where = "u ~ q(u | x)" if index == "sample" else "u = mean of q(u | x)"
    return MeasuredMap(forward, inverse, prepare, NOISE,
                       f"F(.; u): data -> latent with every index held at {where}")


def measured_map(flow: Flow, index: str | None = None) -> MeasuredMap:
    """The map of ``flow`` that :func:`~jflows.models.bi_lipschitz` measures (module docstring).

    Args:
        flow: a bijective flow, one whose layers start with dequantizers, or a CIF.
        index: CIF only: ``"mean"`` (default) or ``"sample"`` of ``q(u | x)``.

    Raises:
        NotBijectiveError: no bijective map to measure.
        ConfigError: ``index`` for a flow without indexed layers, or an unknown ``index``.

    Example:
        >>> flow = jflows.models.cif((2,), layers=2, hidden=(8,), index_hidden=(4,))
        >>> measured_map(flow).description
        'F(.; u): data -> latent with every index held at u = mean of q(u | x)'
    """
    layers = _layers(flow)
    indexed = any(isinstance(layer, IndexedBijection) for layer in layers)
    if index is not None and index not in INDEX_CHOICES:
        raise ConfigError(f"index must be one of {INDEX_CHOICES}, got {index!r}")
    if index is not None and not indexed:
        raise ConfigError(
            f"index={index!r} only applies to continuously indexed flows (CIF); this flow has "
            f"no indexed layer, drop index"
        )
    if flow.kind == Kind.BIJECTION:
        return _plain(flow, 0)
    if indexed:
        bad = [type(layer).__name__ for layer in layers
               if layer.kind != Kind.BIJECTION and not isinstance(layer, IndexedBijection)]
        if bad:
            raise _not_bijective(flow, bad)
        return _indexed(flow, index or "mean")
    skip = 0
    while skip < len(layers) and DEQUANT in layers[skip].rng_streams \
            and layers[skip].kind == Kind.STOCHASTIC:
        skip += 1
    bad = [type(layer).__name__ for layer in layers[skip:] if layer.kind != Kind.BIJECTION]
    if skip and not bad:
        return _plain(flow, skip)
    raise _not_bijective(flow, bad)
