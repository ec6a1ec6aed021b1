"""Residual blocks and models: Lipschitz state, error messages, inverse reporting, diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jflows import ConfigError, MissingRngError
from jflows import bijectors as jb
from jflows import models as jm
from jflows.models.diagnostics import residual_diagnostics
from jflows.names import DIAGNOSTICS, LIPSCHITZ, LOGDET, PARAMS
from jflows.training import create_train_state, make_lipschitz_refresh, make_train_step


def _train(flow, eval_flow, x, steps=40, lr=1e-2):
    """A few training steps, then the refresh that ``fit`` does before saving."""
    opt = optax.adam(lr)
    state = create_train_state(flow, opt, x, jax.random.key(0))
    step = make_train_step(flow, opt)
    for i in range(steps):
        state, _ = step(state, x, jax.random.key(i))
    return make_lipschitz_refresh(eval_flow)(state, x, jax.random.key(steps))


@pytest.mark.parametrize("coeff", [1.0, 1.5, 0.0])
def test_coefficient_outside_zero_one_is_an_error(coeff):
    with pytest.raises(ConfigError, match=rf"coeff={coeff!r}.*\(0, 1\)"):
        jb.LipschitzMLP((8,), coeff=coeff)
    with pytest.raises(ConfigError, match="coeff"):
        jm.resflow((2,), coeff=coeff)


def test_missing_logdet_stream_is_an_error():
    block = jb.ResidualBlock(jb.LipschitzMLP((8,)), logdet="roulette")
    x = jnp.ones((4, 2))
    variables = block.init({PARAMS: jax.random.key(0), LOGDET: jax.random.key(1)}, x)
    with pytest.raises(MissingRngError, match="'logdet'"):
        block.apply(variables, x, method="forward_and_log_det")
    with pytest.raises(MissingRngError, match="'logdet'"):  # not silently the params stream
        block.apply(variables, x, method="forward_and_log_det", rngs={PARAMS: jax.random.key(0)})


def test_exact_mode_needs_no_stream():
    block = jb.ResidualBlock(jb.LipschitzMLP((8,)), logdet="exact")
    x = jnp.ones((4, 2))
    variables = block.init({PARAMS: jax.random.key(0)}, x)
    _, ld = block.apply(variables, x, method="forward_and_log_det")
    assert ld.shape == (4,)


@pytest.mark.slow
def test_power_iteration_state_changes_only_when_mutable():
    block = jb.ResidualBlock(jb.LipschitzMLP((8,)), logdet="exact")
    x = jax.random.normal(jax.random.key(0), (4, 2))
    variables = block.init({PARAMS: jax.random.key(0)}, x)
    noise = jax.random.split(jax.random.key(5), len(jax.tree.leaves(variables[PARAMS])))
    leaves, tree = jax.tree.flatten(variables[PARAMS])
    params = jax.tree.unflatten(tree, [a + jax.random.normal(k, a.shape)  # new weights
                                       for a, k in zip(leaves, noise)])
    variables = {**variables, PARAMS: params}
    _, new = block.apply(variables, x, method="forward_and_log_det", mutable=[LIPSCHITZ])
    changed = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new[LIPSCHITZ],
                           variables[LIPSCHITZ])
    assert max(jax.tree.leaves(changed)) > 1e-3
    out1 = block.apply(variables, x, method="forward_and_log_det")
    out2 = block.apply(variables, x, method="forward_and_log_det")
    np.testing.assert_array_equal(out1[0], out2[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda t: jm.resflow((3,), n_blocks=2, hidden=(16,), coeff=0.9, last_init_scale=1.0,
                              training=t), (64, 3)),
        (lambda t: jm.resflow((4, 4, 1), n_blocks=2, hidden=4, coeff=0.9, fc_blocks=1,
                              fc_hidden=(8,), last_init_scale=1.0, training=t), (16, 4, 4, 1)),
    ],
    ids=["dense", "conv"],
)
def test_trained_layers_respect_the_coefficient(make, shape):
    flow, eval_flow = make(True), make(False)
    x = 2.0 * jax.random.normal(jax.random.key(1), shape)
    state = _train(flow, eval_flow, x)
    report = residual_diagnostics(eval_flow, state.variables(), x)
    assert report.layers, "no normalised layers found"
    raw_above = 0
    for layer in report.layers:
        assert layer["exact_norm"] <= layer["coeff"] * (1 + 1e-2), layer
        raw_above += layer["exact_norm"] > 0.5 * layer["coeff"]
    assert raw_above > 0  # the constraint is active on some layers, so the check means something
    assert report.inversion_error < 1e-5 * float(jnp.max(jnp.abs(x)))  # relative to the data
    assert all(b["converged"] for b in report.blocks)


@pytest.mark.slow
def test_round_trip_of_a_trained_image_model_within_1e5():
    def make(training):
        return jm.resflow((4, 4, 2), n_blocks=2, hidden=8, fc_blocks=1, fc_hidden=(16,),
                          preprocessing=jm.image_preprocessing(17, logit_alpha=0.05)[1:],
                          training=training)  # the bijective part: x is dequantized here

    flow, eval_flow = make(True), make(False)
    x = jax.random.randint(jax.random.key(0), (32, 4, 4, 2), 0, 17) + 0.5
    state = _train(flow, eval_flow, x, steps=20)
    rngs = {LOGDET: jax.random.key(3)}

    @jax.jit  # one compiled program: run eagerly, the two passes cost twice their compilation
    def round_trip(variables, x):
        z = eval_flow.apply(variables, x, method="forward", rngs=rngs)
        return eval_flow.apply(variables, z, method="inverse", rngs=rngs)

    x_rec = round_trip(state.variables(), x)
    assert float(jnp.max(jnp.abs(x_rec - x) / 17.0)) < 1e-5


def _stiff_block(on_nonconvergence):
    return jb.ResidualBlock(
        jb.LipschitzMLP((16,), coeff=0.99, last_init_scale=1.0),
        logdet="exact",
        inverse_max_iter=1,
        on_nonconvergence=on_nonconvergence,
    )


def _stiff_setup(on_nonconvergence):
    block = _stiff_block(on_nonconvergence)
    x = 3.0 * jax.random.normal(jax.random.key(0), (8, 2))
    variables = block.init({PARAMS: jax.random.key(0)}, x)
    z = block.apply(variables, x, method="forward")
    return block, variables, z


@pytest.mark.slow
def test_nonconverged_inverse_is_reported_in_diagnostics():
    block, variables, z = _stiff_setup("ignore")
    _, sown = block.apply(variables, z, method="inverse", mutable=[DIAGNOSTICS])
    (info,) = sown[DIAGNOSTICS]["inverse"]
    assert not bool(info.converged)
    assert int(info.iterations) == 1


def test_nonconverged_inverse_raises_by_default():
    block, variables, z = _stiff_setup("raise")
    with pytest.raises(Exception, match="did not converge.*inverse_max_iter"):
        jax.block_until_ready(jax.jit(lambda v, e: block.apply(v, e, method="inverse"))(
            variables, z))


def test_nonconverged_inverse_can_return_nan():
    block, variables, z = _stiff_setup("nan")
    x = block.apply(variables, z, method="inverse")
    assert bool(jnp.all(jnp.isnan(x)))


@pytest.mark.slow
def test_roulette_block_is_unbiased_for_the_exact_logdet():
    branch = jb.LipschitzMLP((16,), coeff=0.9, last_init_scale=1.0)
    block = jb.ResidualBlock(branch, logdet="roulette", tail="geometric")
    exact = jb.ResidualBlock(branch, logdet="exact")
    x = jax.random.normal(jax.random.key(0), (4, 2))
    variables = block.init({PARAMS: jax.random.key(1), LOGDET: jax.random.key(2)}, x)

    def estimate(key):
        return block.apply(variables, x, method="forward_and_log_det", rngs={LOGDET: key})[1]

    draws = jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(3), 4000))
    truth = exact.apply(variables, x, method="forward_and_log_det")[1]
    se = jnp.std(draws, axis=0) / jnp.sqrt(draws.shape[0])
    assert bool(jnp.all(jnp.abs(jnp.mean(draws, axis=0) - truth) < 3.5 * se + 1e-6))
    assert bool(jnp.all(se > 0))


@pytest.mark.slow
def test_diagnostics_bound_formula():
    flow = jm.resflow((2,), n_blocks=3, hidden=(8,), training=False)
    x = jax.random.normal(jax.random.key(0), (16, 2))
    variables = flow.init({PARAMS: jax.random.key(1)}, x, method="log_prob")
    report = residual_diagnostics(flow, variables, x)
    assert len(report.blocks) == 3 and len(report.layers) == 6
    k = max(b["lipschitz"] for b in report.blocks)
    assert report.bi_lipschitz_bound == pytest.approx(max(1 + k, 1 / (1 - k)) ** 3)
    assert all(0 < b["lipschitz"] <= b["bound"] * 1.01 for b in report.blocks)
    assert "inversion error" in report.summary()


@pytest.mark.slow
def test_sampling_needs_no_logdet_stream():
    """Sampling only inverts the blocks, so an evaluation model with a stochastic log-det
    (more than 16 dimensions: 20 exact terms plus a tail) samples with the sample stream only."""
    flow = jm.resflow((4, 4, 2), n_blocks=1, hidden=4, fc_blocks=0, training=False)
    x = jax.random.normal(jax.random.key(0), (4, 4, 4, 2))
    variables = flow.init({PARAMS: jax.random.key(1), LOGDET: jax.random.key(2)}, x,
                          method="log_prob")
    samples = flow.apply(variables, 3, method="sample", rngs={"sample": jax.random.key(3)})
    assert samples.shape == (3, 4, 4, 2)
    with pytest.raises(MissingRngError, match="'logdet'"):
        flow.apply(variables, 3, method="sample_and_log_prob",
                   rngs={"sample": jax.random.key(3)})


def test_narrowing_dense_kernels_are_stored_out_by_in():
    """The last layer (128 -> 2) is stored as (out, in) and applied as ``x @ kernel.T``."""
    mlp = jb.LipschitzMLP((16,), coeff=0.9, activation="identity", preact=False)
    x = jax.random.normal(jax.random.key(0), (5, 3))
    variables = mlp.init(jax.random.key(1), x)
    p = variables[PARAMS]
    assert p["kernel_0"].shape == (3, 16) and p["kernel_1"].shape == (3, 16)
    g, sown = mlp.apply(variables, x, mutable=[DIAGNOSTICS])
    w0 = sown[DIAGNOSTICS]["layer_0_weight"][0]
    w1 = sown[DIAGNOSTICS]["layer_1_weight"][0]
    assert w0.shape == (3, 16) and w1.shape == (16, 3)
    np.testing.assert_allclose(w1 * np.linalg.norm(p["kernel_1"], 2) / np.linalg.norm(w1, 2),
                               p["kernel_1"].T, rtol=1e-5)
    np.testing.assert_allclose(g(x), (x @ w0 + p["bias_0"]) @ w1 + p["bias_1"], rtol=1e-5,
                               atol=1e-6)
