"""Runs in its own process with XLA_FLAGS=--xla_force_host_platform_device_count=4.

Trains a few steps of several models with the one step builder on a one-device
mesh and on a 4-device mesh, and with the pmap step on 4 devices, from the same initial state
and global batches; reports the largest parameter difference of each parallel run from the
one-device run, and the spread between one-device runs with other step keys (how far apart
two draws of the model's noise take the parameters).
Prints the results as JSON.
"""

import json
import sys

import jax
import numpy as np
import optax

from jflows import models as jm
from jflows.training import create_train_state, make_train_step
from jflows.training import pmap as pm
from jflows.training.parallel import make_mesh, shard_batch

assert jax.device_count() == 4, jax.devices()
STEPS = 3


def max_diff(a, b):
    diffs = [float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return max(diffs, default=0.0)


def train(step, state, batches, mesh, seed=100):
    for i, batch in enumerate(batches):
        state, _ = step(state, shard_batch(batch, mesh), jax.random.key(seed + i))
    return state


def run(name, flow, batches):
    opt = optax.sgd(0.05)  # linear in the gradient (Adam amplifies rounding near zero)
    key = jax.random.key(0)
    one, four = make_mesh(1), make_mesh(4)
    start = create_train_state(flow, opt, batches[0], key, one)
    start4 = create_train_state(flow, opt, batches[0], key, four)
    init_diff = max_diff(start4.params, start.params)  # ActNorm from global statistics
    initial = jax.tree.map(np.asarray, start.params)  # the steps donate their state
    plain = create_train_state(flow, opt, batches[0], key)  # mesh=None: a one-device mesh
    unplaced = jax.tree.map(lambda a: a.copy(), plain)  # the pmap run's start (steps donate)
    default = train(make_train_step(flow, opt), plain, batches, one)
    step_one = make_train_step(flow, opt, one)  # compiled once, reused for the spread
    copies = [jax.tree.map(lambda a: a.copy(), start) for _ in range(2)]  # steps donate
    single = train(step_one, start, batches, one)
    sharded = train(make_train_step(flow, opt, four), start4, batches, four)
    spread = max(  # other step keys: another draw of the model's noise, same batches
        max_diff(train(step_one, copy, batches, one, seed).params, single.params)
        for copy, seed in zip(copies, (200, 300))
    )
    pmapped = pm.replicate_for_pmap(unplaced)  # the same state; no second compiled init
    pmap_step = pm.make_pmap_train_step(flow, opt)
    for i, batch in enumerate(batches):
        pmapped, _ = pmap_step(pmapped, pm.split_for_pmap(batch, 4), jax.random.key(100 + i))
    out = {
        "init": init_diff,
        "default_mesh": max_diff(default.params, single.params),
        "sharded": max_diff(sharded.params, single.params),
        "sharded_lipschitz": max_diff(sharded.collections, single.collections),
        "key_spread": spread,
        "pmap": max_diff(pm.unreplicate(pmapped).params, single.params),
        "pmap_replicas_equal": max_diff(pmapped.params, jax.tree.map(
            lambda a: np.broadcast_to(a[:1], a.shape), pmapped.params)),
        "moved": max_diff(single.params, initial),
        "sharded_is_sharded": str(jax.tree.leaves(sharded.params)[0].sharding),
        "single_is_sharded": str(jax.tree.leaves(single.params)[0].sharding),
    }
    return name, out


def main():
    rng = np.random.default_rng(0)
    vec = [rng.normal(size=(64, 2)).astype(np.float32) * 2 for _ in range(STEPS)]
    img = [rng.integers(0, 17, size=(16, 8, 8, 1)).astype(np.uint8) for _ in range(STEPS)]
    pre = jm.image_preprocessing(17)
    results = dict([
        run("realnvp", jm.realnvp((2,), hidden=(16,), actnorm=True), vec),
        run("resflow_exact", jm.resflow((2,), n_blocks=2, hidden=(16,), logdet="exact"), vec),
        run("resflow_roulette", jm.resflow((2,), n_blocks=2, hidden=(16,)), vec),
        run("glow", jm.glow((8, 8, 1), levels=2, steps=1, hidden=8, preprocessing=pre), img),
    ])
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
