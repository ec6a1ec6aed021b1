"""Glow specifics: 1x1 convolution forms, learned priors, temperature, the singular-weight guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jflows import bijectors as jb
from jflows import models as jm
from jflows.kernels.invconv import lu_weight
from jflows.names import CONSTANTS, PARAMS, SAMPLE
from jflows.training import create_train_state, make_train_step

X = jax.random.normal(jax.random.key(0), (5, 3, 3, 4))


def test_plain_and_lu_convolutions_agree():
    lu = jb.InvertibleConv1x1(lu=True)
    plain = jb.InvertibleConv1x1(lu=False)
    v_lu = lu.init({PARAMS: jax.random.key(1)}, X, method="forward_and_log_det")
    # move the LU parameters off their initial rotation, then give the plain form the same W
    trained = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape),
                           v_lu[PARAMS]["lu"])
    v_lu = {**v_lu, PARAMS: {"lu": trained}}
    w = lu_weight(trained, v_lu[CONSTANTS]["lu_fixed"])
    v_plain = {PARAMS: {"weight": w}}
    z_lu, ld_lu = lu.apply(v_lu, X, method="forward_and_log_det")
    z_pl, ld_pl = plain.apply(v_plain, X, method="forward_and_log_det")
    np.testing.assert_allclose(z_lu, z_pl, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld_lu, ld_pl, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ld_lu, 9 * jnp.linalg.slogdet(w)[1], rtol=1e-4, atol=1e-4)
    assert int(jnp.sum(trained["log_s"] != v_lu[PARAMS]["lu"]["log_s"])) == 0


def test_both_forms_start_from_a_rotation():
    for lu in (True, False):
        conv = jb.InvertibleConv1x1(lu=lu)
        variables = conv.init({PARAMS: jax.random.key(3)}, X, method="forward_and_log_det")
        _, ld = conv.apply(variables, X, method="forward_and_log_det")
        np.testing.assert_allclose(ld, 0.0, atol=1e-4)  # |det| of a rotation is 1


@pytest.mark.slow
def test_lu_constants_are_not_trained():
    flow = jm.glow((8, 8, 1), levels=2, steps=1, hidden=8)
    x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
    opt = optax.adam(1e-2)
    state = create_train_state(flow, opt, x, jax.random.key(0))
    before = jax.tree.map(np.array, state.collections[CONSTANTS])  # the step donates state
    state, _ = make_train_step(flow, opt)(state, x, jax.random.key(1))
    jax.tree.map(np.testing.assert_array_equal, state.collections[CONSTANTS], before)


def test_singular_plain_weight_never_reaches_the_parameters():
    """Guard: a singular 1x1 weight gives a non-finite loss, and the step is rejected."""
    flow = jm.Flow(jb.Chain([jb.InvertibleConv1x1(lu=False)]), jm.StandardNormal((2, 2, 2)),
                   (2, 2, 2))
    x = jax.random.normal(jax.random.key(0), (8, 2, 2, 2))
    opt = optax.sgd(0.1)
    state = create_train_state(flow, opt, x, jax.random.key(0))
    singular = np.array([[1.0, 2.0], [2.0, 4.0]], np.float32)
    params = jax.tree.map(lambda _: jnp.asarray(singular), state.params)
    state = state.replace(params=params)
    logp = flow.apply(state.variables(), x, method="log_prob")
    assert not bool(jnp.all(jnp.isfinite(logp)))
    state, metrics = make_train_step(flow, opt)(state, x, jax.random.key(1))
    assert not bool(metrics["finite"])
    assert int(state.nonfinite_steps) == 1
    np.testing.assert_array_equal(jax.tree.leaves(state.params)[0], singular)


def test_lu_weight_cannot_be_singular():
    trained = {"lower": jnp.full((3, 3), 5.0), "upper": jnp.full((3, 3), -7.0),
               "log_s": jnp.array([-30.0, 0.0, 30.0])}
    fixed = {"perm": jnp.array([2, 0, 1]), "sign": jnp.array([1.0, -1.0, 1.0])}
    w = lu_weight(trained, fixed)
    assert abs(float(jnp.linalg.slogdet(w)[1]) - 0.0) < 1e-3  # log|det| = sum(log_s) = 0


def _factor_out_flow():
    inner = jb.SplitCoupling(3, 0, jb.ConvNet(4))
    bij = jb.FactorOut(inner, learned_prior=True)
    return jm.Flow(bij, jm.StandardNormal((2, 2, 4)), (2, 2, 4))


def _perturbed(flow, x):
    variables = flow.init({PARAMS: jax.random.key(1)}, x, method="log_prob")
    leaves, tree = jax.tree.flatten(variables[PARAMS])
    keys = jax.random.split(jax.random.key(2), len(leaves))
    leaves = [a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
    return {**variables, PARAMS: jax.tree.unflatten(tree, leaves)}


@pytest.mark.slow
def test_factored_out_half_uses_the_predicted_mean_and_scale():
    flow = _factor_out_flow()
    x = jax.random.normal(jax.random.key(0), (6, 2, 2, 4))
    variables = _perturbed(flow, x)
    x_kept, x_out = x[..., :2], x[..., 2:]

    def prior_and_inner(module):
        fo = module.bijector
        mu, log_sigma = fo.conditional_prior(x_kept, 2)
        z_kept, ld_inner = fo.inner.forward_and_log_det(x_kept)
        return mu, log_sigma, z_kept, ld_inner

    mu, log_sigma, z_kept, ld_inner = flow.apply(variables, method=prior_and_inner)
    assert float(jnp.max(jnp.abs(mu))) > 1e-3  # the prior is not trivial after perturbation
    normal = jax.scipy.stats.norm
    expected = (
        jnp.sum(normal.logpdf(z_kept), axis=(1, 2, 3)) + ld_inner
        + jnp.sum(normal.logpdf(x_out, mu, jnp.exp(log_sigma)), axis=(1, 2, 3))
    )
    np.testing.assert_allclose(flow.apply(variables, x, method="log_prob"), expected,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_temperature_zero_returns_the_prior_means():
    flow = _factor_out_flow()
    x = jax.random.normal(jax.random.key(0), (6, 2, 2, 4))
    variables = _perturbed(flow, x)
    a = flow.apply(variables, 4, 0.0, method="sample", rngs={SAMPLE: jax.random.key(1)})
    b = flow.apply(variables, 4, 0.0, method="sample", rngs={SAMPLE: jax.random.key(2)})
    np.testing.assert_array_equal(a, b)  # deterministic
    kept = a[..., :2]
    mu, _ = flow.apply(variables, method=lambda m: m.bijector.conditional_prior(kept, 2))
    np.testing.assert_allclose(a[..., 2:], mu, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_glow_temperature_zero_is_deterministic_and_finite():
    flow = jm.glow((8, 8, 1), levels=2, steps=1, hidden=8,
                   preprocessing=jm.image_preprocessing(17)[1:])  # x is dequantized here
    x = 17 * jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))
    variables = _perturbed(flow, x)
    samples = [flow.apply(variables, 3, 0.0, method="sample", rngs={SAMPLE: jax.random.key(k)})
               for k in (0, 1)]
    np.testing.assert_array_equal(samples[0], samples[1])
    np.testing.assert_array_equal(samples[0][0], samples[0][1])
    assert bool(jnp.all(jnp.isfinite(samples[0])))
    warm = flow.apply(variables, 200, 0.7, method="sample", rngs={SAMPLE: jax.random.key(0)})
    hot = flow.apply(variables, 200, 1.0, method="sample", rngs={SAMPLE: jax.random.key(0)})
    assert float(jnp.std(warm)) < float(jnp.std(hot))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(4, 4, 2), (8, 8, 1)])
def test_glow_latent_has_the_data_shape(shape):
    flow = jm.glow(shape, levels=2, steps=1, hidden=4)
    x = jax.random.normal(jax.random.key(0), (2, *shape))
    variables = flow.init({PARAMS: jax.random.key(1)}, x, method="log_prob")
    assert flow.apply(variables, x, method="forward").shape == x.shape


def test_glow_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible by 4"):
        jm.glow((6, 6, 1), levels=2)
    with pytest.raises(ValueError, match="images"):
        jm.glow((4,))
