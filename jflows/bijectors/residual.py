"""The invertible residual block ``x + g(x)`` of i-ResNet and Residual Flows."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector, Estimate, require_rng
from jflows.bijectors.lipschitz_nets import LipschitzCNN, LipschitzMLP
from jflows.errors import ConfigError
from jflows.kernels.fixed_point import (
    ON_NONCONVERGENCE,
    InverseNotConvergedError,
    check_solver_config,
    default_max_iter,
    fixed_point_inverse,
)
from jflows.kernels.logdet_exact import logdet_exact
from jflows.kernels.logdet_series import logdet_estimate
from jflows.kernels.roulette import check_series_config
from jflows.names import DIAGNOSTICS, LIPSCHITZ, LOGDET

LOGDET_MODES = ("exact", "series", "roulette")
__all__ = ["InverseNotConvergedError", "LOGDET_MODES", "ON_NONCONVERGENCE", "ResidualBlock"]


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
    silent: ``on_nonconvergence="raise"`` (default) raises :class:`InverseNotConvergedError`,
    ``"nan"`` returns NaNs, ``"ignore"`` only sows. Who raises:

    * a caller that collects ``diagnostics`` checks the sown flags itself, so the block does not
      raise; :func:`jflows.models.checked_apply` (and ``Flow``-level helpers built on it) does
      that and raises :class:`InverseNotConvergedError` on the host, under ``jit`` too;
    * otherwise a ``jax.debug.callback`` raises it when the flag reaches the host: eagerly it
      is :class:`InverseNotConvergedError`, under your own ``jit`` JAX wraps it in
      ``JaxRuntimeError`` (whose message contains ours). Catch the documented exception by
      going through :func:`jflows.models.checked_apply`.

    The adjoint solve of the backward pass (gradients through the inverse) follows the same
    policy: ``"raise"`` raises from a host callback in the backward pass, ``"nan"`` makes the
    gradient NaN, ``"ignore"`` lets a truncated gradient through. (A backward pass cannot sow;
    the adjoint's iterations are available from the kernel,
    :func:`jflows.kernels.fixed_point_inverse` with ``adjoint_tap``.)

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
            slower on CPU (``python -m benchmarks.investigations.w1_breakdown`` prints both).
        inverse_atol: absolute tolerance of the fixed point (default 1e-5 in float32, 1e-10 in
            float64).
        inverse_rtol: relative tolerance of the fixed point (same defaults).
        inverse_max_iter: iteration cap of the fixed point (and of its adjoint). ``None``
            (default): from the Banach bound for the dtype's tolerance and the branch's
            Lipschitz bound ``coeff ** n_layers``
            (:func:`jflows.kernels.fixed_point.default_max_iter`, at least 200), e.g. 263 for
            ``Lip(g) <= 0.9`` in float64.
        on_nonconvergence: ``"raise"``, ``"nan"`` or ``"ignore"``.

    Example:
        >>> block = ResidualBlock(LipschitzMLP((16, 16), coeff=0.97), logdet="roulette")
        >>> x = jnp.ones((4, 2))
        >>> rngs = {"params": jax.random.key(0), "logdet": jax.random.key(1)}
        >>> variables = block.init(rngs, x, method="forward_and_log_det")
        >>> z, logdet = block.apply(variables, x, rngs={"logdet": jax.random.key(2)})
        >>> z.shape, logdet.shape, block.estimate.name, sorted(block.rng_streams)
        ((4, 2), (4,), 'UNBIASED', ['logdet'])
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
    inverse_max_iter: int | None = None
    on_nonconvergence: str = "raise"

    def __post_init__(self):
        if self.logdet not in LOGDET_MODES:
            raise ConfigError(f"unknown logdet mode {self.logdet!r}; choose one of {LOGDET_MODES}")
        if self.logdet != "exact":
            check_series_config(self.n_exact_terms, self._tail(), self.geom_p, self.poisson_lam)
        check_solver_config(
            *self._tolerances(jnp.float32), self._max_iter(jnp.float32), self.on_nonconvergence
        )
        super().__post_init__()

    @property
    def event_ndims(self) -> int:
        return 3 if isinstance(self.branch, LipschitzCNN) else 1

    def _tolerances(self, dtype) -> tuple[float, float]:
        default = 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-5
        atol = default if self.inverse_atol is None else self.inverse_atol
        rtol = default if self.inverse_rtol is None else self.inverse_rtol
        return atol, rtol

    def branch_lipschitz_bound(self) -> float:
        """``coeff ** n_layers``: the bound on ``Lip(g)`` the spectral normalisation enforces."""
        branch = self.branch
        n_layers = (
            len(branch.kernel_sizes) if isinstance(branch, LipschitzCNN) else len(branch.hidden) + 1
        )
        return float(branch.coeff) ** n_layers

    def _max_iter(self, dtype) -> int:
        if self.inverse_max_iter is not None:
            return self.inverse_max_iter
        atol, rtol = self._tolerances(dtype)
        return default_max_iter(self.branch_lipschitz_bound(), atol if atol > 0 else rtol)

    own_collections = frozenset({LIPSCHITZ, DIAGNOSTICS})

    @property
    def own_rng_streams(self) -> frozenset[str]:
        """``logdet`` for the stochastic estimators; none for the exact log-det."""
        return frozenset() if self.logdet == "exact" else frozenset({LOGDET})

    @property
    def own_estimate(self) -> Estimate:
        """Exact, unbiased (roulette) or biased (truncated series)."""
        return {"exact": Estimate.EXACT, "roulette": Estimate.UNBIASED}.get(
            self.logdet, Estimate.BIASED
        )

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

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        g = self.branch(x)
        gx, logdet = self._logdet(g, x)
        return x + gx, logdet

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``x + g(x)`` without the log-det (no ``logdet`` stream needed)."""
        return x + self.branch(x)(x)

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """The fixed-point inverse without the log-det (sampling needs no ``logdet`` stream)."""
        return self._solve(self.branch(z), z)

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        g = self.branch(z)
        x = self._solve(g, z)
        _, logdet = self._logdet(g, x)
        return x, -logdet

    def _solve(self, g, z):
        atol, rtol = self._tolerances(z.dtype)
        policy = self.on_nonconvergence
        # A caller collecting the diagnostics checks the flags itself (checked_apply).
        checked_by_caller = policy == "raise" and self.is_mutable_collection(DIAGNOSTICS)
        x, info = fixed_point_inverse(
            g,
            z,
            atol=atol,
            rtol=rtol,
            max_iter=self._max_iter(z.dtype),
            on_nonconvergence="ignore" if checked_by_caller else policy,
            adjoint_on_nonconvergence=policy,
            name=self.name or "ResidualBlock",
        )
        self.sow(DIAGNOSTICS, "inverse", info)
        return x
