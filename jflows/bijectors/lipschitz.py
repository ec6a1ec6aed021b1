"""Spectrally normalised weights whose power-iteration vectors live in the ``lipschitz`` collection.

:func:`normalized_weight` is called from inside a module's compact method. It keeps one pair of
vectors ``(u, v)`` per weight in the ``lipschitz`` collection and returns
``W / max(1, (1 + m) sigma / c)`` with ``sigma = u^T A v`` and the safety margin
``m = SPECTRAL_MARGIN`` (1e-3, since ``sigma`` under-estimates the norm; see
:mod:`jflows.kernels.spectral`). The vectors are converged at ``init`` (adaptive power
iteration, at most 200 steps) and refreshed only when the caller passes
``mutable=[LIPSCHITZ]`` to ``apply``: then ``n_iter`` warm-started iterations run (or, with
``tol``, iterations until the vectors settle) before ``sigma`` is computed, so the weight used
in that very call is normalised with up-to-date vectors. The training step does this once per
step; evaluation and sampling use the stored vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.kernels.induced_norms import induced_power_iteration
from jflows.kernels.spectral import (
    SPECTRAL_MARGIN,
    lipschitz_scale,
    power_iteration,
    power_iteration_adaptive,
    sigma_from_vectors,
)
from jflows.names import DIAGNOSTICS, LIPSCHITZ, PARAMS

OperatorFactory = Callable[[jax.Array], tuple[Callable, Callable]]
INIT_ITERATIONS = 200


def normalized_weight(
    module: nn.Module,
    name: str,
    kernel: jax.Array,
    operator: OperatorFactory,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    coeff: float,
    n_iter: int,
    tol: float | None = None,
    orders: tuple[float, float] = (2.0, 2.0),
) -> jax.Array:
    """Returns ``kernel / max(1, (1 + m) sigma / coeff)``, creating or refreshing ``(u, v)``.

    Args:
        module: the calling module (inside its compact method).
        name: variable name for the vectors (unique within ``module``).
        kernel: the raw weight parameter.
        operator: maps a kernel to ``(matvec, rmatvec)`` between ``in_shape`` and ``out_shape``.
        in_shape: shape of ``v`` (the layer's input space for one example).
        out_shape: shape of ``u`` (the output space).
        coeff: Lipschitz coefficient ``c`` in (0, 1).
        n_iter: iterations per refresh (when ``tol`` is None).
        tol: if set, refresh adaptively with ``atol = rtol = tol`` (at most 200 iterations).
        orders: induced norm ``(p, q)`` of the map; ``(2, 2)`` is the spectral norm.

    Returns:
        The normalised kernel.
    """
    matvec, rmatvec = operator(kernel)
    spectral = tuple(orders) == (2.0, 2.0)

    def iterate(u, v, steps):
        if spectral:
            return power_iteration(matvec, rmatvec, u, v, steps)
        return induced_power_iteration(matvec, rmatvec, u, v, *orders, steps)

    def init_vectors():
        key_u, key_v = jax.random.split(module.make_rng(PARAMS))
        u = jax.random.normal(key_u, out_shape, kernel.dtype)
        v = jax.random.normal(key_v, in_shape, kernel.dtype)
        if spectral:
            u, v, _, _ = power_iteration_adaptive(
                matvec, rmatvec, u, v, atol=1e-4, rtol=1e-4, max_iter=INIT_ITERATIONS
            )
        else:
            u, v, _ = iterate(u, v, INIT_ITERATIONS)
        return {"u": u, "v": v}

    state = module.variable(LIPSCHITZ, name, init_vectors)
    u, v = (state.value[k].astype(kernel.dtype) for k in ("u", "v"))
    if module.is_mutable_collection(LIPSCHITZ) and not module.is_initializing():
        if tol is not None and spectral:
            u, v, _, _ = power_iteration_adaptive(matvec, rmatvec, u, v, atol=tol, rtol=tol)
        else:
            u, v, _ = iterate(u, v, n_iter)
        state.value = {"u": u, "v": v}
    sigma = sigma_from_vectors(matvec, u, v)
    normalized = kernel / lipschitz_scale(sigma, coeff, SPECTRAL_MARGIN)
    # for jflows.models.residual_diagnostics (kept only when DIAGNOSTICS is mutable)
    module.sow(DIAGNOSTICS, f"{name}_weight", normalized)
    module.sow(DIAGNOSTICS, f"{name}_coeff", jnp.asarray(coeff, kernel.dtype))
    return normalized


def lipswish_betas(
    module: nn.Module, count: int, init: float, dtype=jnp.float32
) -> list[jax.Array]:
    """``count`` LipSwish parameters ``b`` (``beta = softplus(b)``), each its own scalar."""
    constant = nn.initializers.constant(init)
    return [module.param(f"beta_{i}", constant, (), dtype) for i in range(count)]


def torch_linear_init(fan_in: int, scale: float = 1.0):
    """``U(+-scale / sqrt(fan_in))``: PyTorch's default (Kaiming-uniform with a = sqrt 5)."""
    bound = scale / jnp.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init
