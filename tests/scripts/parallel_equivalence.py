"""Runs in its own process with XLA_FLAGS=--xla_force_host_platform_device_count=4.

Trains a few steps of several models on one device, with the sharded jit step on 4 devices and
with the pmap step on 4 devices, from the same initial state and global batches; prints the
largest parameter difference of each parallel run from the single-device run as JSON.
"""

import json
import sys

import jax
import numpy as np
import optax

from jflows import models as jm
from jflows.training import create_train_state, make_train_step
from jflows.training import parallel as par

assert jax.device_count() == 4, jax.devices()
STEPS = 3


def max_diff(a, b):
    diffs = [float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return max(diffs, default=0.0)


def run(name, flow, batches, pmap_deterministic):
    opt = optax.sgd(0.05)  # linear in the gradient (Adam amplifies rounding near zero)
    key = jax.random.key(0)
    single = create_train_state(flow, opt, batches[0], key)
    step = make_train_step(flow, opt)
    mesh = par.make_mesh(4)
    sharded = par.create_sharded_train_state(flow, opt, batches[0], key, mesh)
    init_diff = max_diff(sharded.params, single.params)  # ActNorm from global statistics
    sharded_step = par.make_sharded_train_step(flow, opt, mesh)
    pmapped = par.replicate_for_pmap(single)
    pmap_step = par.make_pmap_train_step(flow, opt)
    for i, batch in enumerate(batches):
        k = jax.random.key(100 + i)
        single, m1 = step(single, batch, k)
        sharded, m2 = sharded_step(sharded, par.shard_batch(batch, mesh), k)
        pmapped, m3 = pmap_step(pmapped, par.split_for_pmap(batch, 4), k)
    out = {
        "init": init_diff,
        "sharded": max_diff(sharded.params, single.params),
        "sharded_lipschitz": max_diff(sharded.collections, single.collections),
        "pmap": max_diff(par.unreplicate(pmapped).params, single.params),
        "pmap_replicas_equal": max_diff(pmapped.params, jax.tree.map(
            lambda a: np.broadcast_to(a[:1], a.shape), pmapped.params)),
        "pmap_deterministic": pmap_deterministic,
        "moved": max_diff(single.params, create_train_state(
            flow, opt, batches[0], key).params),
        "sharded_is_sharded": str(sharded.params and jax.tree.leaves(sharded.params)[0].sharding),
    }
    return name, out


def main():
    rng = np.random.default_rng(0)
    vec = [rng.normal(size=(64, 2)).astype(np.float32) * 2 for _ in range(STEPS)]
    img = [rng.integers(0, 17, size=(16, 8, 8, 1)).astype(np.uint8) for _ in range(STEPS)]
    pre = jm.image_preprocessing(17)
    results = dict([
        run("realnvp", jm.realnvp((2,), hidden=(16,), actnorm=True), vec, True),
        run("resflow_exact", jm.resflow((2,), n_blocks=2, hidden=(16,), logdet="exact"),
            vec, True),
        run("resflow_roulette", jm.resflow((2,), n_blocks=2, hidden=(16,)), vec, False),
        run("glow", jm.glow((8, 8, 1), levels=2, steps=1, hidden=8, preprocessing=pre), img,
            False),  # pmap replicas draw their own dequantization noise
    ])
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
