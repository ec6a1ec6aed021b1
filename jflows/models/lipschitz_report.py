r"""Bi-Lipschitz diagnostics of any bijective flow: local Lipschitz constants of f and f^-1.

For the data-to-latent map :math:`f` (``Flow.forward``) and its inverse :math:`f^{-1}`
(``Flow.inverse``), :func:`bi_lipschitz` estimates the local constants
:math:`\|J_f(x_i)\|_2` and :math:`\|J_{f^{-1}}(z_i)\|_2` at :math:`z_i = f(x_i)` for every data
point by power iteration (:mod:`jflows.kernels.local_lipschitz`), and summarises them: the
maximum (an estimate from below of :math:`\mathrm{Lip}(f)` on the data), quantiles, and the
product :math:`\mathrm{Lip}(f)\,\mathrm{Lip}(f^{-1})`, the bi-Lipschitz constant estimate. A
flow between supports of different topology needs a large one (the argument of the i-ResNet
and CIF papers).

**What is measured.** The whole map from the data as the model receives it to the latent,
pre-processing included (a run's standardisation, the scaling and logit of images), so the
constants are in the units of the data. Dequantization draws noise and has no Jacobian: for a
model whose layers start with dequantizers (image runs) the map measured is the bijective rest,
from the dequantized ``k + u`` to ``z``; integer ``x`` are dequantized first with the model's
own dequantizer (stream ``dequant`` from ``key``), or pass already dequantized floats with
``dequantized=True``. Any other non-bijective layer (absolute value, augmentation, max-pool,
slicing) raises :class:`~jflows.errors.NotBijectiveError`: measure a bijective sub-model.
For a continuously indexed flow (CIF) the map measured is the per-index bijection
``F(.; u)`` with each layer's index held at the mean (or a draw) of ``q(u | x)`` at the point
(:mod:`jflows.models.measured_map`).

**Inverses.** Coupling flows' inverses are differentiated directly (forward- and reverse-mode).
Fixed-point inverses with implicit gradients (residual flows) have no forward-mode derivative;
``inverse_method="auto"`` then uses :math:`J_{f^{-1}}(f(x)) = J_f(x)^{-1}` at
:math:`x = f^{-1}(z)` (linear solves, :func:`~jflows.kernels.local_inverse_lipschitz`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jflows.errors import ConfigError
from jflows.kernels.local_lipschitz import local_inverse_lipschitz, local_lipschitz
from jflows.models.flow import Flow
from jflows.models.measured_map import measured_map
from jflows.names import DEQUANT

QUANTILES = (0.5, 0.9, 0.99)
INVERSE_METHODS = ("auto", "direct", "implicit")


@dataclasses.dataclass(frozen=True)
class MapLipschitz:
    """Local Lipschitz estimates of one map over the points.

    Attributes:
        values: per-point estimates of the Jacobian's spectral norm, shape ``(n,)``.
        max: their maximum.
        quantiles: ``{q: value}`` for the requested quantile levels.
    """

    values: np.ndarray
    max: float
    quantiles: dict[float, float]

    @classmethod
    def of(cls, values: np.ndarray, levels: Sequence[float]) -> MapLipschitz:
        values = np.asarray(values, dtype=np.float64)
        return cls(values, float(values.max()),
                   {float(q): float(np.quantile(values, q)) for q in levels})


@dataclasses.dataclass(frozen=True)
class LipschitzReport:
    """What :func:`bi_lipschitz` measured.

    Attributes:
        forward: estimates for ``f`` at the data points.
        inverse: estimates for ``f^-1`` at ``z = f(x)``.
        bi_lipschitz: ``forward.max * inverse.max``.
        inversion_error: ``max |f^-1(f(x)) - x|`` over the points.
        inverse_method: ``"direct"`` or ``"implicit"`` (see the module docstring).
        measured: which map was measured, in words.
    """

    forward: MapLipschitz
    inverse: MapLipschitz
    bi_lipschitz: float
    inversion_error: float
    inverse_method: str
    measured: str

    def figures(self) -> dict[str, Any]:
        """Flat JSON-ready figures: ``forward_max``, ``forward_q50``, ..., ``bi_lipschitz``."""
        out: dict[str, Any] = {}
        for name, part in (("forward", self.forward), ("inverse", self.inverse)):
            out[f"{name}_max"] = part.max
            for q, value in part.quantiles.items():
                out[f"{name}_q{100 * q:g}"] = value
        out.update(bi_lipschitz=self.bi_lipschitz, inversion_error=self.inversion_error,
                   points=len(self.forward.values), inverse_method=self.inverse_method,
                   measured=self.measured)
        return out

    def summary(self) -> str:
        """One line: maxima and medians of both maps and their product."""
        def part(name, p):
            median = p.quantiles.get(0.5)
            tail = f" (median {median:.4g})" if median is not None else ""
            return f"Lip({name}) {p.max:.4g}{tail}"

        return (f"{part('f', self.forward)}, {part('f^-1', self.inverse)}, bi-Lipschitz "
                f"{self.bi_lipschitz:.4g} over {len(self.forward.values)} points")


_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 8


def _compiled(flow: Flow, index: str | None, iterations: int, tol: float):
    """``(measured map, jitted prepare, jitted measure)`` of ``flow``, cached per flow object."""
    key = (id(flow), index, iterations, tol)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is flow:
        _CACHE.move_to_end(key)
        return hit[1]
    target = measured_map(flow, index)

    def single(method, v):
        def one(e, *args):
            batched = jax.tree.map(lambda a: a[None], args[0]) if args else None
            return flow.apply(v, e[None], batched, method=method)[0]
        return one

    def measure(v, pts, args, kf, ki, implicit):
        forward = single(target.forward, v)
        f_est = local_lipschitz(forward, pts, kf, iterations=iterations, tol=tol, args=args)
        z = f_est.outputs
        if implicit:
            x_back = flow.apply(v, z, args, method=target.inverse)
            i_est = local_inverse_lipschitz(forward, x_back, ki, iterations=iterations,
                                            tol=tol, args=args)
        else:
            i_est = local_lipschitz(single(target.inverse, v), z, ki, iterations=iterations,
                                    tol=tol, args=args)
            x_back = i_est.outputs
        return f_est.values, i_est.values, jnp.max(jnp.abs(x_back - pts))

    def prepare(v, x, rng):
        return flow.apply(v, x, method=target.prepare, rngs={target.stream: rng})

    fns = (target, jax.jit(prepare) if target.prepare else None,
           jax.jit(measure, static_argnums=5))
    _CACHE[key] = (flow, fns)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return fns


def bi_lipschitz(
    flow: Flow,
    variables: dict,
    x: jax.Array,
    *,
    iterations: int = 50,
    tol: float = 1e-6,
    key: jax.Array | None = None,
    quantiles: Sequence[float] = QUANTILES,
    inverse_method: str = "auto",
    dequantized: bool = False,
    index: str | None = None,
    batch_size: int = 1000,
) -> LipschitzReport:
    r"""Local Lipschitz constants of ``f`` and ``f^-1`` of ``flow`` over the data ``x``.

    Args:
        flow: a bijective flow (use the evaluation model of residual flows), one whose
            layers start with dequantizers, or a CIF (see the module docstring).
        variables: its variables.
        x: data points, shape ``(n, *flow.event_shape)``.
        iterations: power-iteration steps per point (at most).
        tol: stop a point's iteration once its estimate changes by less than this (relative).
        key: seeds the start vectors (and the dequantization noise or the CIF indices);
            default ``key(0)``.
        quantiles: quantile levels reported (in ``[0, 1]``).
        inverse_method: ``"direct"`` (differentiate ``Flow.inverse``), ``"implicit"``
            (:math:`J_f(x)^{-1}` by linear solves) or ``"auto"`` (direct where ``Flow.inverse``
            has a forward-mode derivative, else implicit).
        dequantized: ``x`` is already dequantized (models with dequantizers only).
        index: CIF only: hold each layer's index at the mean (``"mean"``, the default) or at
            a draw (``"sample"``) of its approximate posterior ``q(u | x)``.
        batch_size: points per compiled call.

    Returns:
        A :class:`LipschitzReport`.

    Raises:
        NotBijectiveError: the flow's map (after its dequantizers) is not a bijection.

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = jax.random.normal(key, (16, 2))
        >>> report = jflows.models.bi_lipschitz(flow, flow.init(key, x), x)
        >>> report.bi_lipschitz >= 1.0, sorted(report.forward.quantiles)
        (True, [0.5, 0.9, 0.99])
    """
    if inverse_method not in INVERSE_METHODS:
        raise ConfigError(f"inverse_method must be one of {INVERSE_METHODS}, got "
                          f"{inverse_method!r}")
    if any(not 0 <= q <= 1 for q in quantiles):
        raise ConfigError(f"quantiles must lie in [0, 1], got {tuple(quantiles)}")
    target, prepare, compiled = _compiled(flow, index, iterations, tol)
    if dequantized and target.stream != DEQUANT:
        raise ConfigError("dequantized=True, but this flow has no dequantization layer; drop it")
    key = jax.random.key(0) if key is None else key
    key_prepare, key_f, key_i = jax.random.split(key, 3)
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ConfigError(f"bi_lipschitz needs a batch of at least one point, got {x.shape}")
    indices = None
    if prepare is not None and not dequantized:
        x, indices = prepare(variables, x, key_prepare)
    method = inverse_method
    f_vals, i_vals, errors = [], [], []
    for start in range(0, x.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        args = (variables, x[rows], jax.tree.map(lambda a, r=rows: a[r], indices),
                jax.random.fold_in(key_f, start), jax.random.fold_in(key_i, start))
        if method == "auto":
            try:
                out = compiled(*args, False)
                method = "direct"
            except TypeError as err:  # a custom_vjp (implicit-gradient) inverse
                if "forward-mode" not in str(err):
                    raise
                method = "implicit"
                out = compiled(*args, True)
        else:
            try:
                out = compiled(*args, method == "implicit")
            except TypeError as err:
                if "forward-mode" not in str(err):
                    raise
                raise ConfigError(
                    "inverse_method='direct', but this flow's inverse has no forward-mode "
                    "derivative (a fixed-point inverse with implicit gradients); use "
                    "inverse_method='implicit' or 'auto'"
                ) from err
        f_vals.append(np.asarray(out[0]))
        i_vals.append(np.asarray(out[1]))
        errors.append(float(out[2]))
    fwd = MapLipschitz.of(np.concatenate(f_vals), quantiles)
    inv = MapLipschitz.of(np.concatenate(i_vals), quantiles)
    return LipschitzReport(fwd, inv, fwd.max * inv.max, max(errors), method,
                           target.description)
