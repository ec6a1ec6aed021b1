"""One-dimensional vector data ``(N, 1)``: refused up front by coupling models, fine elsewhere.

Coupling flows (nice, realnvp) split every event into two halves, which needs at least two
dimensions: their factories raise a ConfigError naming the model and the models that can do
1-D data. Residual flows (resflow, iresnet) handle ``d = 1``: they initialise, train, score,
sample and checkpoint like any other model.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import ConfigError
from jflows import models as jm
from jflows.cli import main
from jflows.names import LOGDET, SAMPLE
from jflows.training import (
    Checkpointer,
    create_train_state,
    make_lipschitz_refresh,
    make_optimizer,
    make_train_step,
)


@pytest.mark.parametrize("name", ["nice", "realnvp"])
def test_coupling_models_refuse_one_dimensional_vectors(name):
    with pytest.raises(ConfigError, match=rf"{name} needs vectors of at least 2 dimensions") as e:
        jm.MODELS[name]((1,))
    assert "(1,)" in str(e.value) and "resflow or iresnet" in str(e.value)


def test_coupling_models_still_take_two_dimensions():
    for name in ("nice", "realnvp"):
        jm.MODELS[name]((2,))


def test_glow_refuses_vectors():
    with pytest.raises(ConfigError, match=r"glow models images"):
        jm.glow((1,))


def _bimodal(n, seed=0):
    rng = np.random.default_rng(seed)
    centre = np.where(rng.random(n) < 0.5, -2.0, 2.0)
    return (centre + 0.5 * rng.normal(size=n)).astype(np.float32)[:, None]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resflow", "iresnet"])
def test_residual_models_train_sample_and_checkpoint_one_dimensional_data(name, tmp_path):
    kw = dict(n_blocks=2, hidden=(16,))
    flow, eval_flow = jm.MODELS[name]((1,), **kw), jm.MODELS[name]((1,), training=False, **kw)
    x = jnp.asarray(_bimodal(256))
    optimizer = make_optimizer(1e-2, steps=20)
    state = create_train_state(flow, optimizer, x, jax.random.key(0))
    step = make_train_step(flow, optimizer)
    losses = []
    for i in range(20):
        state, metrics = step(state, x, jax.random.key(i + 1))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)) and int(state.nonfinite_steps) == 0
    assert np.mean(losses[-5:]) < losses[0]  # it learns something
    state = make_lipschitz_refresh(eval_flow)(state, x, jax.random.key(99))

    rngs = {LOGDET: jax.random.key(5), SAMPLE: jax.random.key(6)}

    @jax.jit  # one compiled program: run eagerly, the three passes cost more than compiling
    def evaluate(variables, x):
        logp = eval_flow.apply(variables, x, method="log_prob", rngs=rngs)
        samples, logq = eval_flow.apply(variables, 64, method="sample_and_log_prob", rngs=rngs)
        return logp, samples, logq, eval_flow.apply(variables, samples, method="log_prob",
                                                    rngs=rngs)

    logp, samples, logq, logp_of_samples = evaluate(state.variables(), x)
    assert logp.shape == (256,) and bool(jnp.all(jnp.isfinite(logp)))
    assert samples.shape == (64, 1) and bool(jnp.all(jnp.isfinite(samples)))
    np.testing.assert_allclose(logq, logp_of_samples, rtol=1e-4, atol=1e-4)

    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(20, state, {"wall_time_s": 1.0})
    fresh = create_train_state(flow, optimizer, x, jax.random.key(123))
    restored, meta = ckpt.restore(fresh)
    assert meta["wall_time_s"] == 1.0 and int(restored.step) == int(state.step)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_cli_refuses_realnvp_on_one_dimensional_data_before_writing(tmp_path, capsys):
    data = tmp_path / "one.npy"
    np.save(data, _bimodal(200))
    out = tmp_path / "run"
    code = main(["train", "--model", "realnvp", "--data", str(data), "--out", str(out),
                 "--steps", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert "realnvp needs vectors of at least 2 dimensions" in err and "resflow" in err
    assert not os.path.exists(out)
