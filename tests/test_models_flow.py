"""Flow-level behaviour: sampling, base distributions, the distrax adapter, RNG errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import MissingRngError
from jflows import models as jm
from jflows.names import PARAMS, SAMPLE


@pytest.fixture(scope="module")
def trained_like():
    flow = jm.realnvp((2,), hidden=(16,), base="diagonal")
    x = jax.random.normal(jax.random.key(0), (64, 2)) * 2.0 + 1.0
    variables = flow.init(jax.random.key(1), x, method="log_prob")
    noise = jax.random.split(jax.random.key(2), len(jax.tree.leaves(variables)))
    leaves, tree = jax.tree.flatten(variables)
    variables = jax.tree.unflatten(
        tree, [v + 0.1 * jax.random.normal(k, v.shape) for v, k in zip(leaves, noise)]
    )
    return flow, variables, x


def test_log_prob_is_base_plus_logdet(trained_like):
    flow, variables, x = trained_like
    z, ld = flow.apply(variables, x, method="forward_and_log_det")
    base = flow.apply(variables, z, method="base_log_prob")
    np.testing.assert_allclose(flow.apply(variables, x, method="log_prob"), base + ld, rtol=1e-6)


@pytest.mark.slow
def test_sample_and_log_prob_agree(trained_like):
    flow, variables, _ = trained_like
    x, logp = flow.apply(variables, 50, method="sample_and_log_prob",
                         rngs={SAMPLE: jax.random.key(3)})
    assert x.shape == (50, 2)
    np.testing.assert_allclose(flow.apply(variables, x, method="log_prob"), logp,
                               rtol=1e-4, atol=1e-4)
    same = flow.apply(variables, 50, method="sample", rngs={SAMPLE: jax.random.key(3)})
    np.testing.assert_allclose(same, x, rtol=1e-6, atol=1e-6)


def test_sample_needs_the_sample_stream(trained_like):
    flow, variables, _ = trained_like
    with pytest.raises(MissingRngError, match="'sample'"):
        flow.apply(variables, 5, method="sample", rngs={PARAMS: jax.random.key(0)})


def test_wrong_event_shape_is_a_clear_error(trained_like):
    flow, variables, _ = trained_like
    with pytest.raises(ValueError, match=r"events of shape \(2,\).*\(4, 3\)"):
        flow.apply(variables, jnp.zeros((4, 3)), method="log_prob")


@pytest.mark.slow
def test_distrax_adapter_log_prob_and_samples(trained_like):
    flow, variables, x = trained_like
    dist = jm.to_distrax(flow, variables)
    np.testing.assert_allclose(dist.log_prob(x), flow.apply(variables, x, method="log_prob"),
                               rtol=1e-5, atol=1e-5)
    samples, logp = dist.sample_and_log_prob(seed=jax.random.key(4), sample_shape=(2000,))
    assert samples.shape == (2000, 2) and bool(jnp.all(jnp.isfinite(samples)))
    np.testing.assert_allclose(logp, flow.apply(variables, samples, method="log_prob"),
                               rtol=1e-4, atol=1e-4)
    # samples are distributed as the flow's own samples: compare means within 5 standard errors
    own = flow.apply(variables, 2000, method="sample", rngs={SAMPLE: jax.random.key(5)})
    se = jnp.sqrt(jnp.var(own, 0) / 2000 + jnp.var(samples, 0) / 2000)
    assert bool(jnp.all(jnp.abs(own.mean(0) - samples.mean(0)) < 5 * se))


def test_temperature_scales_the_base(trained_like):
    flow, variables, _ = trained_like
    dist = flow.apply(variables, method=lambda m: m.base.distribution(0.5))
    full = flow.apply(variables, method=lambda m: m.base.distribution(1.0))
    np.testing.assert_allclose(dist.distribution.scale, 0.5 * full.distribution.scale)
    z0 = flow.apply(variables, 3, 0.0, method="sample", rngs={SAMPLE: jax.random.key(0)})
    mode = flow.apply(variables, full.distribution.loc[None], method="inverse")
    np.testing.assert_allclose(z0, jnp.repeat(mode, 3, axis=0), rtol=1e-5, atol=1e-5)


def test_flow_bijector_round_trip_and_opposite_log_dets(trained_like):
    """``FlowBijector`` in distrax's direction: forward is the flow's inverse, and back."""
    from jflows.models.distrax_adapter import FlowBijector

    flow, variables, x = trained_like
    bij = FlowBijector(flow, variables)
    z, ld_inv = bij.inverse_and_log_det(x)
    x_back, ld_fwd = bij.forward_and_log_det(z)
    np.testing.assert_allclose(x_back, x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ld_fwd, -ld_inv, rtol=1e-4, atol=1e-4)
    z_flow, ld_flow = flow.apply(variables, x, method="forward_and_log_det")
    np.testing.assert_allclose(z, z_flow, rtol=1e-6)
    np.testing.assert_allclose(ld_inv, ld_flow, rtol=1e-6)
