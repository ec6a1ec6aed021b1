"""The residual factories pass the fixed-point solver's settings to every block (issue 12, 6)."""

import jax
import jax.numpy as jnp
import pytest
from helpers import is_info

import jflows.models as jm
from jflows.bijectors import ResidualBlock
from jflows.names import DIAGNOSTICS, PARAMS, SAMPLE


@pytest.mark.slow
@pytest.mark.parametrize("factory", [jm.resflow, jm.iresnet])
def test_factories_pass_solver_settings_to_every_block(factory):
    flow = factory((2,), n_blocks=3, hidden=(8,), training=False, inverse_max_iter=2,
                   inverse_atol=1e-9, inverse_rtol=0.0, on_nonconvergence="nan")
    x = jax.random.normal(jax.random.key(0), (8, 2))
    variables = flow.init({PARAMS: jax.random.key(1)}, x, method="log_prob")
    samples, sown = flow.apply(variables, 8, method="sample", rngs={SAMPLE: jax.random.key(2)},
                               mutable=[DIAGNOSTICS])
    infos = [a for a in jax.tree_util.tree_leaves(sown, is_leaf=is_info) if is_info(a)]
    assert infos
    for info in infos:  # stacked by nn.scan: one entry per block
        assert info.iterations.shape == (3,) and bool(jnp.all(info.iterations == 2))
    assert bool(jnp.all(jnp.isnan(samples)))


def test_default_cap_follows_the_banach_bound_for_the_dtype():
    from jflows.bijectors import LipschitzMLP

    block = ResidualBlock(LipschitzMLP((8,), coeff=0.95), logdet="exact")
    assert block._max_iter(jnp.float32) == 200
    assert block._max_iter(jnp.float64) > 200  # 0.95 ** 2 = 0.9025 needs ~270 at 1e-10
