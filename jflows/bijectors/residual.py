"""The invertible residual block ``x + g(x)`` of i-ResNet and Residual Flows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jflows.bijectors.base import Bijector, require_rng
from jflows.bijectors.lipschitz_nets import LipschitzCNN, LipschitzMLP
from jflows.errors import ConfigError, JflowsError
from jflows.kernels.fixed_point import check_solver_config, fixed_point_inverse
from jflows.kernels.logdet_exact import logdet_exact
from jflows.kernels.logdet_series import logdet_estimate
from jflows.kernels.roulette import check_series_config
from jflows.names import DIAGNOSTICS, LOGDET

LOGDET_MODES = ("exact", "series", "roulette")
ON_NONCONVERGENCE = ("raise", "nan", "ignore")


class InverseNotConvergedError(JflowsError, RuntimeError):
    """The fixed-point inverse of a residual block hit its iteration cap."""


class ResidualBlock(Bijector):
    r"""``z = x + g(x)`` with ``Lip(g) < 1`` (Behrmann et al. 2019; Chen et al. 2019).

    Log-determinant :math:`\log\det(I + J_g(x))` by ``logdet``:

    * ``"exact"``: brute force ``slogdet`` of the full Jacobian (small events; differentiable);
    * ``"series"``: the truncated power series with ``n_exact_terms`` terms and one Hutchinson
      probe (i-ResNet; biased);
    * ``"roulette"``: ``n_exact_terms`` exact terms plus a ``tail`` (``"geometric"`` with
      ``geom_p`` or ``"poisson"`` with ``poisson_lam``) Russian-roulette tail, one draw shared by
      the batch (Residual Flows; unbiased). Evaluation uses ``n_exact_terms=20``.

    Stochastic modes draw from the ``logdet`` RNG stream (a missing stream is an error). With
    ``gradient="neumann"`` the returned value is the estimate itself and its gradient is the
    Neumann-series estimator (memory independent of the number of terms);
    ``gradient="backprop"`` differentiates the truncated series.

    Inverse: fixed-point iteration ``x <- z - g(x)`` in a ``lax.while_loop`` with per-element
    tolerances, differentiable by implicit differentiation. Its iterations, residual and
    convergence flag are sown into the ``diagnostics`` collection (apply with
    ``mutable=["diagnostics"]`` to read them). A solve that hits ``inverse_max_iter`` is never
    silent: ``on_nonconvergence="raise"`` (default) raises :class:`InverseNotConvergedError`
    when the result reaches the host, ``"nan"`` returns NaNs, ``"ignore"`` only sows.

    Attributes:
        branch: a :class:`LipschitzMLP` (vectors) or :class:`LipschitzCNN` (images).
        logdet: ``"exact"``, ``"series"`` or ``"roulette"``.
        n_exact_terms: exact terms of the series.
        tail: roulette law, ``"geometric"`` or ``"poisson"``.
        geom_p: geometric success probability.
        poisson_lam: Poisson rate.
        probe: ``"gaussian"`` or ``"rademacher"``.
        gradient: ``"neumann"`` or ``"backprop"`` (series only).
        remat_surrogate: compute the Neumann-gradient estimator as one custom VJP whose
            forward pass runs the branch once (its linearisation serves both the block output
            and the series) and whose backward pass recomputes the surrogate (default). Reverse
            mode only; ``False`` builds the surrogate from plain JAX operations, differentiable
            in forward mode and to higher order, but it runs the branch forward twice and stores
            the surrogate's activations, which inside ``nn.scan`` makes a W1 step 1.6-1.8x
            slower on CPU (``python benchmarks/w1_breakdown.py`` prints both).
        inverse_atol: absolute tolerance of the fixed point (default 1e-5 in float32, 1e-10 in
            float64).
        inverse_rtol: relative tolerance of the fixed point (same defaults).
        inverse_max_iter: iteration cap of the fixed point.
        on_nonconvergence: ``"raise"``, ``"nan"`` or ``"ignore"``.

    Example:
        >>> block = ResidualBlock(LipschitzMLP((128, 128), coeff=0.97), logdet="roulette")
        >>> variables = block.init({"params": k1, "logdet": k2}, x, method="forward_and_log_det")
    """

    branch: LipschitzMLP | LipschitzCNN
    logdet: str = "roulette"
    n_exact_terms: int = 2
    tail: str = "geometric"
    geom_p: float = 0.5
    poisson_lam: float = 2.0
    probe: str = "gaussian"
    gradient: str = "neumann"
    remat_surrogate: bool = True
    inverse_atol: float | None = None
    inverse_rtol: float | None = None
    inverse_max_iter: int = 100
    on_nonconvergence: str = "raise"

    def __post_init__(self):
        if self.logdet not in LOGDET_MODES:
            raise ConfigError(f"unknown logdet mode {self.logdet!r}; choose one of {LOGDET_MODES}")
        if self.logdet != "exact":
            check_series_config(self.n_exact_terms, self._tail(), self.geom_p, self.poisson_lam)
        if self.on_nonconvergence not in ON_NONCONVERGENCE:
            raise ConfigError(
                f"on_nonconvergence must be one of {ON_NONCONVERGENCE}, "
                f"got {self.on_nonconvergence!r}"
            )
        check_solver_config(*self._tolerances(jnp.float32), self.inverse_max_iter)
        super().__post_init__()

    @property
    def event_ndims(self) -> int:
        return 3 if isinstance(self.branch, LipschitzCNN) else 1

    def _tolerances(self, dtype) -> tuple[float, float]:
        default = 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-5
        atol = default if self.inverse_atol is None else self.inverse_atol
        rtol = default if self.inverse_rtol is None else self.inverse_rtol
        return atol, rtol

    def _tail(self):
        return self.tail if self.logdet == "roulette" else None

    def _logdet(self, g, x):
        if self.logdet == "exact":
            return logdet_exact(g, x, self.event_ndims)
        return logdet_estimate(
            g,
            x,
            require_rng(self, LOGDET),
            self.event_ndims,
            n_exact_terms=self.n_exact_terms,
            tail=self._tail(),
            geom_p=self.geom_p,
            poisson_lam=self.poisson_lam,
            probe=self.probe,
            gradient=self.gradient,
            remat_surrogate=self.remat_surrogate,
        )

    def forward_and_log_det(self, x: jax.Array):
        g = self.branch(x)
        gx, logdet = self._logdet(g, x)
        return x + gx, logdet

    def forward(self, x: jax.Array) -> jax.Array:
        """``x + g(x)`` without the log-det (no ``logdet`` stream needed)."""
        return x + self.branch(x)(x)

    def inverse(self, z: jax.Array) -> jax.Array:
        """The fixed-point inverse without the log-det (sampling needs no ``logdet`` stream)."""
        return self._solve(self.branch(z), z)

    def inverse_and_log_det(self, z: jax.Array):
        g = self.branch(z)
        x = self._solve(g, z)
        _, logdet = self._logdet(g, x)
        return x, -logdet

    def _solve(self, g, z):
        atol, rtol = self._tolerances(z.dtype)
        x, info = fixed_point_inverse(g, z, atol=atol, rtol=rtol, max_iter=self.inverse_max_iter)
        self.sow(DIAGNOSTICS, "inverse", info)
        if self.on_nonconvergence == "nan":
            x = jnp.where(info.converged, x, jnp.nan)
        elif self.on_nonconvergence == "raise":
            jax.debug.callback(
                _raise_if_not_converged,
                info.converged,
                info.iterations,
                info.residual,
                self.name or "ResidualBlock",
            )
        return x


def _raise_if_not_converged(converged, iterations, residual, name):
    if not np.all(converged):
        raise InverseNotConvergedError(
            f"the fixed-point inverse of {name} did not converge: {int(np.max(iterations))} "
            f"iterations, residual max|x + g(x) - z| = {float(np.max(residual)):.3g}. Raise "
            "inverse_max_iter or loosen inverse_atol/inverse_rtol; if the residual stays large, "
            "Lip(g) is probably >= 1 (check with jflows.models.residual_diagnostics)"
        )
