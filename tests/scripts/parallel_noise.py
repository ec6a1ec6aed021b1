"""Runs in its own process with XLA_FLAGS=--xla_force_host_platform_device_count=2 (or more).

Evaluates stochastic models (an augmented flow, stream ``noise``; a uniformly dequantized image
flow, stream ``dequant``) on a batch of IDENTICAL rows split over two devices, with the mesh
(``jit`` + shardings) eval step and with the ``pmap`` eval step, and reports per-row NLLs:
rows on different devices must differ (every replica draws its own noise) and the same key
must reproduce them. The training steps' losses are compared with the mean of the eval step's
NLL for the same key, which ties the training paths to the same per-replica draws.
Prints the results as JSON.
"""

import json

import jax
import numpy as np
import optax

from jflows import models as jm
from jflows.bijectors import UniformDequantization
from jflows.training import create_train_state, make_eval_step, make_train_step
from jflows.training import pmap as pm
from jflows.training.parallel import make_mesh, shard_batch

# tiny programs: compile time dominates (as in tests/conftest.py)
jax.config.update("jax_disable_most_optimizations", True)
assert jax.device_count() >= 2, jax.devices()
N = 8  # rows, 4 per device


def per_row(name, flow, row):
    opt = optax.sgd(0.0)  # the training steps below must leave the parameters unchanged
    x = np.broadcast_to(row, (N, *row.shape)).copy()
    mesh = make_mesh(2)
    state = create_train_state(flow, opt, x, jax.random.key(0), mesh)
    # away from the initialisation, where q(a | x) = N(0, I) cancels the augmented flow's draws
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda a: np.asarray(a) + 0.3 * rng.standard_normal(a.shape).astype(a.dtype), state.params
    )
    state = state.replace(params=jax.device_put(params, jax.tree.leaves(state.params)[0].sharding))
    key = jax.random.key(7)
    step = make_eval_step(flow, mesh)
    sharded = np.asarray(step(state, shard_batch(x, mesh), key))
    again = np.asarray(step(state, shard_batch(x, mesh), key))
    other_key = np.asarray(step(state, shard_batch(x, mesh), jax.random.key(8)))
    pstate = pm.replicate_for_pmap(jax.tree.map(np.asarray, state), jax.devices()[:2])
    pstep = pm.make_pmap_eval_step(flow, devices=jax.devices()[:2])
    pmapped = np.asarray(pstep(pstate, pm.split_for_pmap(x, 2), key)).reshape(N)
    pmapped_again = np.asarray(pstep(pstate, pm.split_for_pmap(x, 2), key)).reshape(N)
    # the training steps' losses: the mean of the same per-row draws
    _, metrics = make_train_step(flow, opt, mesh)(state, shard_batch(x, mesh), key)
    ptrain = pm.make_pmap_train_step(flow, opt, devices=jax.devices()[:2])
    _, pmetrics = ptrain(pstate, pm.split_for_pmap(x, 2), key)
    return name, {
        "sharded": sharded.tolist(),
        "sharded_again": again.tolist(),
        "sharded_other_key": other_key.tolist(),
        "pmap": pmapped.tolist(),
        "pmap_again": pmapped_again.tolist(),
        "train_loss": float(metrics["loss"]),
        "pmap_train_loss": np.asarray(pmetrics["loss"]).tolist(),
    }


def main():
    augmented = jm.augmented((2,), augment=2, n_couplings=2, hidden=(4,), q_hidden=(4,))
    dequantized = jm.realnvp(
        (4, 4, 1), n_levels=1, n_checkerboard=1, conv_hidden=4,
        preprocessing=[UniformDequantization(event_ndims=3, levels=17)],
    )
    cases = [
        per_row("augmented", augmented, np.array([0.3, -1.2], np.float32)),
        per_row("dequantized", dequantized, np.arange(16, dtype=np.uint8).reshape(4, 4, 1)),
    ]
    print(json.dumps(dict(cases)))


if __name__ == "__main__":
    main()
