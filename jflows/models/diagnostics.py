"""Diagnostics of residual flows: Lipschitz constants, bi-Lipschitz bounds and inversion.

Inverse failures of i-ResNets and Residual Flows almost always mean that a branch ``g`` is not
contractive any more (an under-estimated spectral norm, a layer used at another input size).
:func:`residual_diagnostics` measures what the theory assumes, for a trained model on data.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from jflows.kernels.spectral_conv import conv_apply
from jflows.models.flow import Flow
from jflows.names import DIAGNOSTICS, LIPSCHITZ


@dataclasses.dataclass
class ResidualReport:
    """What :func:`residual_diagnostics` measured.

    Attributes:
        layers: per normalised layer: ``path``, ``block`` (index in its stack), ``exact_norm``
            (largest singular value of the dense matrix, or of the convolution operator at its
            input size), ``coeff`` (its bound ``c``).
        blocks: per residual branch ``g``: ``path``, ``block``, ``lipschitz`` (the product of
            its layers' exact norms, an upper bound of ``Lip(g)``), ``bound`` (``c ** L``),
            and the fixed-point inverse's ``iterations``, ``residual`` and ``converged``.
        inversion_error: ``max |inverse(forward(x)) - x|`` over the data.
        bi_lipschitz_bound: ``max(1 + k, 1 / (1 - k)) ** n_blocks`` with ``k`` the largest
            estimated ``Lip(g)``: a bound on the Lipschitz constants of the whole residual part
            and of its inverse.
        bi_lipschitz_bound_from_coeff: the same with ``k = max c ** L`` (the design bound).
    """

    layers: list[dict[str, Any]]
    blocks: list[dict[str, Any]]
    inversion_error: float
    bi_lipschitz_bound: float
    bi_lipschitz_bound_from_coeff: float

    def summary(self) -> str:
        """A short human-readable table."""
        lines = [
            f"{'block':40s} {'Lip(g)':>8s} {'bound':>8s} {'iters':>6s} {'residual':>9s} conv",
        ]
        for b in self.blocks:
            lines.append(
                f"{b['path'] + '[' + str(b['block']) + ']':40s} {b['lipschitz']:8.4f} "
                f"{b['bound']:8.4f} {b['iterations']:6d} {b['residual']:9.2e} {b['converged']}"
            )
        lines.append(
            f"inversion error {self.inversion_error:.2e}; bi-Lipschitz bound "
            f"{self.bi_lipschitz_bound:.4g} (from the coefficients: "
            f"{self.bi_lipschitz_bound_from_coeff:.4g})"
        )
        return "\n".join(lines)


def _exact_norm(weight: np.ndarray, input_shape: tuple[int, ...]) -> float:
    if weight.ndim == 2:
        return float(np.linalg.norm(weight, 2))
    if weight.shape[0] == 1 and weight.shape[1] == 1:
        return float(np.linalg.norm(weight[0, 0], 2))
    d = math.prod(input_shape)
    matrix = jax.jacfwd(lambda v: conv_apply(jnp.asarray(weight), v.reshape(input_shape)).ravel())(
        jnp.zeros(d, weight.dtype)
    )
    return float(np.linalg.svd(np.asarray(matrix), compute_uv=False)[0])


def _leading(value) -> np.ndarray:
    """Sown values are tuples of one entry; inside ``nn.scan`` they carry a block axis."""
    return np.asarray(value[0] if isinstance(value, tuple) else value)


def residual_diagnostics(
    flow: Flow, variables: dict, x: jax.Array, rngs: dict | None = None
) -> ResidualReport:
    """Measures every residual block of ``flow`` (with ``variables``) on the data ``x``.

    Args:
        flow: a residual flow (e.g. from :func:`jflows.models.resflow`); use the evaluation
            model so no estimator noise is needed.
        variables: its variables (``params``, ``lipschitz``, ...).
        x: a batch of data.
        rngs: RNG streams if the model's log-det is stochastic (``{"logdet": key}``).

    Returns:
        A :class:`ResidualReport`.

    Example:
        >>> flow = jflows.models.resflow((2,), n_blocks=2, hidden=(8,), training=False)
        >>> x = jax.random.normal(key, (64, 2))
        >>> report = residual_diagnostics(flow, flow.init(key, x), x)
        >>> len(report.blocks), report.inversion_error < 1e-4
        (2, True)
        >>> print(report.summary())
        block...Lip(g)...bound...iters...residual conv
        ...True
        inversion error ...; bi-Lipschitz bound ... (from the coefficients: ...)
    """
    rngs = rngs or {}
    (z, _), sown = flow.apply(
        variables, x, method="forward_and_log_det", rngs=rngs, mutable=[DIAGNOSTICS]
    )
    (x_rec, _), inv = flow.apply(
        variables, z, method="inverse_and_log_det", rngs=rngs, mutable=[DIAGNOSTICS]
    )
    diag = flatten_dict(sown[DIAGNOSTICS], sep="/")
    lip = flatten_dict(variables.get(LIPSCHITZ, {}), sep="/")
    inverse = flatten_dict(inv[DIAGNOSTICS], sep="/", is_leaf=lambda _, v: isinstance(v, tuple))
    layers, per_branch = [], {}
    for key, value in sorted(diag.items()):
        if not key.endswith("_weight"):
            continue
        name = key.removesuffix("_weight")
        weights = _leading(value)
        coeffs = _leading(diag[f"{name}_coeff"])
        v_shape = lip[f"{name}/v"].shape
        stacked = weights.ndim in (3, 5)  # a leading block axis from nn.scan
        if not stacked:
            weights, coeffs = weights[None], np.asarray(coeffs)[None]
        in_shape = v_shape[1:] if stacked else v_shape
        branch = name.rsplit("/", 1)[0]
        for b in range(weights.shape[0]):
            norm = _exact_norm(weights[b], tuple(in_shape))
            layers.append({"path": name, "block": b, "exact_norm": norm,
                           "coeff": float(np.ravel(coeffs)[b])})
            entry = per_branch.setdefault((branch, b), {"lipschitz": 1.0, "bound": 1.0})
            entry["lipschitz"] *= norm
            entry["bound"] *= float(np.ravel(coeffs)[b])
    blocks = []
    for (branch, b), entry in sorted(per_branch.items()):
        block_path = branch.rsplit("/branch", 1)[0]
        info = inverse.get(f"{block_path}/inverse")
        iterations, residual, converged = -1, float("nan"), None
        if info is not None:
            fp = jax.tree.map(np.asarray, info[0])
            if np.ndim(fp.iterations):  # stacked over the blocks of an nn.scan
                fp = jax.tree.map(lambda a, i=b: a[i], fp)
            iterations, residual = int(fp.iterations), float(fp.residual)
            converged = bool(fp.converged)
        blocks.append({"path": block_path, "block": b, **entry, "iterations": iterations,
                       "residual": residual, "converged": converged})
    n = len(blocks)
    k = max((b["lipschitz"] for b in blocks), default=0.0)
    k_design = max((b["bound"] for b in blocks), default=0.0)

    def bound(kk):
        return float(max(1.0 + kk, 1.0 / (1.0 - kk)) ** n) if kk < 1 else float("inf")

    return ResidualReport(
        layers=layers,
        blocks=blocks,
        inversion_error=float(jnp.max(jnp.abs(x_rec - x))),
        bi_lipschitz_bound=bound(k),
        bi_lipschitz_bound_from_coeff=bound(k_design),
    )
