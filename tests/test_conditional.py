"""A conditional flow trains from Python on a density whose shape depends on a context.

``x1 ~ N(0, 1)``, ``x2 = 2 c x1 + 0.3 e`` with ``c ~ U(-1, 1)``: given ``c`` the data lie near
a line of slope ``2c``; without it they form a bow tie. The conditional RealNVP
(``context_shape=(1,)``) must beat the same flow without the context on held-out data, and its
samples given a context must follow that context's slope.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jflows import models as jm
from jflows.errors import ShapeError


def _data(n, seed):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
    x1 = rng.normal(size=(n, 1))
    x2 = 2.0 * c * x1 + 0.3 * rng.normal(size=(n, 1))
    return np.concatenate([x1, x2], 1).astype(np.float32), c


def _train(flow, x, c, steps=800, batch=256, seed=0):
    conditional = c is not None
    x, c = jnp.asarray(x), None if c is None else jnp.asarray(c)
    args = (x[:batch], c[:batch]) if conditional else (x[:batch],)
    params = flow.init(jax.random.key(seed), *args, method="log_prob")
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    def loss(p, xb, cb):
        extra = (cb,) if conditional else ()
        return -flow.apply(p, xb, *extra, method="log_prob").mean()

    @jax.jit
    def step(p, s, i):
        idx = jax.random.randint(jax.random.fold_in(jax.random.key(seed + 1), i), (batch,), 0,
                                 len(x))
        value, grads = jax.value_and_grad(loss)(p, x[idx], None if c is None else c[idx])
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    for i in range(steps):
        params, opt_state, _ = step(params, opt_state, i)
    return params


@pytest.mark.slow
def test_conditional_flow_beats_the_unconditional_one():
    x, c = _data(4000, 0)
    x_test, c_test = _data(2000, 1)
    kw = dict(n_couplings=4, hidden=(32, 32))
    conditional = jm.realnvp((2,), context_shape=(1,), **kw)
    unconditional = jm.realnvp((2,), **kw)
    assert conditional.conditional and not unconditional.conditional
    p_cond = _train(conditional, x, c)
    p_uncond = _train(unconditional, x, None)
    nll_cond = -float(conditional.apply(p_cond, x_test, c_test, method="log_prob").mean())
    nll_uncond = -float(unconditional.apply(p_uncond, x_test, method="log_prob").mean())
    # the true conditional NLL is about 0.5 log(2 pi e) + 0.5 log(2 pi e 0.09) = 1.62 nats
    assert nll_cond < nll_uncond - 0.3, (nll_cond, nll_uncond)
    assert nll_cond < 2.0
    # samples given a context follow its slope: x2 / x1 regression close to 2c
    for value in (-0.8, 0.5):
        draws = conditional.apply(p_cond, 2000, 1.0, jnp.array([value]), method="sample",
                                  rngs={"sample": jax.random.key(3)})
        slope = float(np.polyfit(np.asarray(draws[:, 0]), np.asarray(draws[:, 1]), 1)[0])
        assert abs(slope - 2 * value) < 0.25, (value, slope)


def test_context_errors_name_the_problem():
    x, c = _data(8, 0)
    conditional = jm.realnvp((2,), n_couplings=2, hidden=(8,), context_shape=(1,))
    params = conditional.init(jax.random.key(0), x, c, method="log_prob")
    with pytest.raises(ShapeError, match="needs a context"):
        conditional.apply(params, x, method="log_prob")
    with pytest.raises(ShapeError, match="context_shape"):
        conditional.apply(params, x, jnp.zeros((8, 2)), method="log_prob")
    with pytest.raises(ShapeError, match="one context row per sample"):
        conditional.apply(params, 3, 1.0, jnp.zeros((5, 1)), method="sample",
                          rngs={"sample": jax.random.key(0)})
    plain = jm.realnvp((2,), n_couplings=2, hidden=(8,))
    plain_params = plain.init(jax.random.key(0), x, method="log_prob")
    with pytest.raises(ShapeError, match="no conditional layer"):
        plain.apply(plain_params, x, c, method="log_prob")
