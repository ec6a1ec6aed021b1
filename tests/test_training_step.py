"""The jitted train and eval steps: learning, the non-finite guard, compilation, collections."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jflows.bijectors import Bijector, Chain
from jflows.data import load_dataset, vector_stats
from jflows.kernels.elementwise import affine_forward, affine_inverse
from jflows.models import Flow, StandardNormal, realnvp, vector_preprocessing
from jflows.names import LIPSCHITZ
from jflows.training import create_train_state, make_eval_step, make_train_step
from jflows.training.parallel import make_mesh


def tree_equal(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b)
    )


def host_copy(tree):
    return jax.tree_util.tree_map(lambda x: np.array(x, copy=True), tree)


@pytest.fixture(scope="module")
def toy():
    ds = load_dataset("8gaussians", n_train=4000, n_test=500)
    pre = vector_preprocessing(*vector_stats(ds.train))
    model = realnvp((2,), n_couplings=2, hidden=(32, 32), actnorm=True, preprocessing=pre)
    return ds, model


@pytest.fixture(scope="module")
def trainer(toy):
    _, model = toy
    opt = optax.adam(1e-2)
    return opt, make_train_step(model, opt), make_eval_step(model)


def batches(x, size, n):
    rng = np.random.default_rng(0)
    return [x[rng.integers(0, len(x), size)] for _ in range(n)]


@pytest.mark.slow
def test_train_step_reduces_loss(toy, trainer):
    ds, model = toy
    opt, step, evaluate = trainer
    state = create_train_state(model, opt, ds.train[:500], jax.random.key(0))
    before = float(evaluate(state, ds.test, jax.random.key(0)).mean())
    for i, batch in enumerate(batches(ds.train, 256, 150)):
        state, metrics = step(state, batch, jax.random.key(i))
    after = float(evaluate(state, ds.test, jax.random.key(0)).mean())
    assert after < before - 0.5, (before, after)
    assert int(state.step) == 150 and int(state.nonfinite_steps) == 0
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["grad_norm"]))


def test_nonfinite_batch_leaves_state_unchanged(toy, trainer):
    ds, model = toy
    opt, step, _ = trainer
    state = create_train_state(model, opt, ds.train[:500], jax.random.key(0))
    state, _ = step(state, ds.train[:256], jax.random.key(1))
    params, opt_state = host_copy(state.params), host_copy(state.opt_state)
    bad = ds.train[:256].copy()
    bad[3, 1] = np.nan
    state, metrics = step(state, bad, jax.random.key(2))
    assert not bool(metrics["finite"])
    assert int(state.nonfinite_steps) == 1 and int(state.step) == 2
    assert tree_equal(state.params, params) and tree_equal(state.opt_state, opt_state)
    state, metrics = step(state, ds.train[256:512], jax.random.key(3))
    assert bool(metrics["finite"]) and int(state.nonfinite_steps) == 1
    assert not tree_equal(state.params, params)


@pytest.mark.slow
def test_no_recompilation_between_steps(toy):
    ds, model = toy
    schedule = optax.cosine_decay_schedule(1e-3, 10)
    opt = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(schedule))
    state = create_train_state(model, opt, ds.train[:500], jax.random.key(0))
    weak = [x for x in jax.tree_util.tree_leaves(state) if getattr(x, "weak_type", False)]
    assert not weak
    step = make_train_step(model, opt)
    compiles = []

    def listener(name, *_, **__):
        if "backend_compile" in name:
            compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for i, batch in enumerate(batches(ds.train, 128, 5)):
            state, _ = step(state, batch, jax.random.key(i))
            if i == 0:
                first = len(compiles)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first >= 1 and step._cache_size() == 1
    assert len(compiles) == first, "the train step compiled again after its first call"


class _Counting(Bijector):
    """Learned per-feature scale plus a LIPSCHITZ counter bumped whenever it is mutable."""

    @nn.compact
    def __call__(self, x, inverse=False):
        count = self.variable(LIPSCHITZ, "count", lambda: jnp.zeros((), jnp.int32))
        if self.is_mutable_collection(LIPSCHITZ) and not self.is_initializing():
            count.value = count.value + 1
        log_scale = self.param("log_scale", nn.initializers.zeros, (x.shape[-1],))
        shift = jnp.zeros_like(log_scale)
        if inverse:
            return affine_inverse(x, shift, log_scale, 1)
        return affine_forward(x, shift, log_scale, 1)

    def forward_and_log_det(self, x, context=None):
        return self(x)

    def inverse_and_log_det(self, z, context=None):
        return self(z, inverse=True)


def test_collections_refresh_once_per_step_and_eval_discards():
    model = Flow(Chain([_Counting()]), StandardNormal((2,)), (2,))
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32) * 3.0
    opt = optax.sgd(1e-2)
    state = create_train_state(model, opt, x, jax.random.key(0))
    assert int(state.collections[LIPSCHITZ]["bijector"]["bijectors_0"]["count"]) == 0
    step, evaluate = make_train_step(model, opt), make_eval_step(model)
    for i in range(3):
        state, _ = step(state, x, jax.random.key(i))

    def count(s):
        return int(s.collections[LIPSCHITZ]["bijector"]["bijectors_0"]["count"])

    assert count(state) == 3
    bad = x.copy()
    bad[0] = np.inf
    state, metrics = step(state, bad, jax.random.key(9))
    assert not bool(metrics["finite"]) and count(state) == 3
    nll = evaluate(state, x, jax.random.key(0))
    assert nll.shape == (64,) and count(state) == 3


@pytest.mark.slow
def test_eval_step_is_negative_log_prob(toy, trainer):
    ds, model = toy
    opt, _, evaluate = trainer
    state = create_train_state(model, opt, ds.train[:500], jax.random.key(0))
    nll = evaluate(state, ds.test, jax.random.key(0))
    logp = model.apply(state.variables(), ds.test, method="log_prob")
    np.testing.assert_allclose(np.asarray(nll), -np.asarray(logp), rtol=1e-6)


def test_one_device_is_a_one_device_mesh():
    # mesh=None is the one-device mesh: the same jit over a NamedSharding as for n devices
    model = realnvp((2,), n_couplings=2, hidden=(4,))
    x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    opt = optax.sgd(0.1)
    default = create_train_state(model, opt, x, jax.random.key(0))
    explicit = create_train_state(model, opt, x, jax.random.key(0), make_mesh(1))
    for leaf in jax.tree_util.tree_leaves(default):
        assert isinstance(leaf.sharding, NamedSharding) and leaf.sharding.mesh.size == 1
    default, _ = make_train_step(model, opt)(default, x, jax.random.key(1))
    explicit, _ = make_train_step(model, opt, make_mesh(1))(explicit, x, jax.random.key(1))
    assert tree_equal(default, explicit)
    assert all(leaf.sharding.spec == P() for leaf in jax.tree_util.tree_leaves(default))
    nll = make_eval_step(model)(default, x, jax.random.key(0))
    assert nll.shape == (32,) and nll.sharding.mesh.size == 1
