"""The parts every training step shares (jflows.training.guarded): collections and the guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jflows
from jflows.names import CONSTANTS, LIPSCHITZ
from jflows.training import create_train_state
from jflows.training.guarded import apply_for_eval, apply_with_collections, guarded_update


def _resflow_state():
    flow = jflows.models.resflow((2,), n_blocks=1, hidden=(8,), logdet="exact")
    x = jax.random.normal(jax.random.key(0), (16, 2))
    opt = optax.sgd(0.1)
    return flow, opt, x, create_train_state(flow, opt, x, jax.random.key(1))


def test_apply_with_collections_updates_the_mutable_ones_only():
    flow, _, x, state = _resflow_state()
    assert LIPSCHITZ in state.collections
    log_prob, collections = apply_with_collections(
        flow, state, state.params, x, method="log_prob", rngs={}
    )
    assert log_prob.shape == (16,) and set(collections) == set(state.collections)
    plain = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
    pstate = create_train_state(plain, optax.sgd(0.1), x, jax.random.key(1))
    _, same = apply_with_collections(plain, pstate, pstate.params, x, method="log_prob", rngs={})
    assert same is pstate.collections and CONSTANTS not in same
    nll_like = apply_for_eval(flow, state, x, method="log_prob", rngs={})
    np.testing.assert_allclose(nll_like, log_prob, rtol=1e-5)


def test_guarded_update_applies_finite_steps_and_skips_the_others():
    flow, opt, x, state = _resflow_state()
    grads = jax.tree_util.tree_map(jnp.ones_like, state.params)
    new, finite = guarded_update(state, opt, jnp.float32(1.0), grads, state.collections)
    assert bool(finite) and int(new.step) == 1 and int(new.nonfinite_steps) == 0
    leaf = jax.tree_util.tree_leaves(state.params)[0]
    np.testing.assert_allclose(jax.tree_util.tree_leaves(new.params)[0], leaf - 0.1, rtol=1e-6)
    bad, finite = guarded_update(state, opt, jnp.float32(jnp.nan), grads, state.collections)
    assert not bool(finite) and int(bad.step) == 1 and int(bad.nonfinite_steps) == 1
    for a, b in zip(jax.tree_util.tree_leaves(bad.params), jax.tree_util.tree_leaves(state.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)
