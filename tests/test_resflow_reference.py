"""The 2-D Residual Flow equals the reference formula of Chen et al. (2019), written out by hand.

Each block is ``x + g(x)`` with ``g(x) = W_3 phi(W_2 phi(W_1 phi(x) + b_1) + b_2) + b_3``,
LipSwish ``phi(z) = z sigmoid(softplus(beta) z) / 1.1`` before every linear layer, and
``W_i = A_i / max(1, 1.001 u_i^T A_i v_i / c)`` (jflows' documented 1e-3 safety margin on
power iteration) from the raw weight ``A_i`` (PyTorch's ``(out, in)`` layout) and its stored
power-iteration vectors; the log-density is
``log N(z; 0, I) + sum_b log|det(I + J_g_b)|``. The hand-written version below reads the raw
arrays out of the jflows variables and must give the same log-density and the same gradients,
so the library's layout, normalisation and activation order are those of the reference code
(which the W1 benchmark compares against normflows;
``benchmarks/investigations/w1_same_weights.py``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from jflows import models as jm
from jflows.names import LIPSCHITZ, PARAMS
from jflows.training import create_train_state, make_train_step

DIMS = (2, 16, 16, 2)
COEFF = 0.9


def _flow():
    return jm.resflow(
        (2,), n_blocks=3, hidden=DIMS[1:-1], coeff=COEFF, actnorm=False, logdet="exact",
        last_init_scale=1.0,
    )


def _by_name(tree):
    return {path[-2:] if path[-1] in ("u", "v") else path[-1]: v
            for path, v in traverse_util.flatten_dict(tree).items()}


def _reference_log_prob(params, lipschitz, x):
    """Hand-written reference, from the raw arrays only (no jflows code)."""
    p, lip = _by_name(params), _by_name(lipschitz)
    n_blocks = p["kernel_0"].shape[0]

    def g(b, h):
        for i in range(len(DIMS) - 1):
            raw = p[f"kernel_{i}"][b]
            a = raw if DIMS[i + 1] < DIMS[i] else raw.T  # (out, in), as PyTorch stores it
            u, v = lip[(f"layer_{i}", "u")][b], lip[(f"layer_{i}", "v")][b]
            sigma = jax.lax.stop_gradient(u) @ a @ jax.lax.stop_gradient(v)
            w = a / jnp.maximum(1.0, sigma * 1.001 / COEFF)  # jflows' documented 1e-3 margin
            beta = jax.nn.softplus(p[f"beta_{i}"][b])
            h = h * jax.nn.sigmoid(beta * h) / 1.1
            h = h @ w.T + p[f"bias_{i}"][b]
        return h

    def one(x1):
        logdet = 0.0
        for b in range(n_blocks):
            jac = jax.jacfwd(lambda y, b=b: g(b, y))(x1)
            logdet = logdet + jnp.linalg.slogdet(jnp.eye(2) + jac)[1]
            x1 = x1 + g(b, x1)
        return -0.5 * jnp.sum(x1**2) - math.log(2 * math.pi) + logdet

    return jax.vmap(one)(x)


def _trained_state():
    """A state a few Adam steps in (weights, biases and LipSwish betas moved off their init)."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 2)) * [2.0, 0.5], jnp.float32)
    flow, opt = _flow(), optax.adam(3e-2)
    state = create_train_state(flow, opt, x, jax.random.key(0))
    step = make_train_step(flow, opt)
    for i in range(15):
        state, _ = step(state, x, jax.random.key(i))
    return flow, state, x


def _values_and_mean_gradient(log_prob, params):
    """``log_prob(params)`` and the gradient of its mean, in one jitted program (run eagerly,
    the per-example Jacobians of the reference cost several times its compilation)."""

    def mean_and_values(p):
        values = log_prob(p)
        return jnp.mean(values), values

    (_, values), grads = jax.jit(jax.value_and_grad(mean_and_values, has_aux=True))(params)
    return values, grads


@pytest.mark.slow
def test_log_prob_and_gradients_equal_the_hand_written_reference():
    flow, state, x = _trained_state()
    lip = state.collections[LIPSCHITZ]
    p, vec = _by_name(state.params), _by_name(lip)
    ratios = [
        float(vec[("layer_0", "u")][b] @ p["kernel_0"][b].T @ vec[("layer_0", "v")][b]) / COEFF
        for b in range(3)
    ]
    assert min(ratios) > 1.0, f"the normalisation should be active in every block: {ratios}"

    def library(params):
        return flow.apply({PARAMS: params, LIPSCHITZ: lip}, x, method="log_prob")

    values, got = _values_and_mean_gradient(library, state.params)
    reference, want = _values_and_mean_gradient(lambda p: _reference_log_prob(p, lip, x),
                                                state.params)
    np.testing.assert_allclose(values, reference, rtol=1e-5, atol=1e-5)
    for path, g in traverse_util.flatten_dict(got).items():
        w = traverse_util.flatten_dict(want)[path]
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(w))),
                                   err_msg=str(path))
