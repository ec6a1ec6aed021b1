"""A non-converged inverse is caught as InverseNotConvergedError under jit too (issue 12, 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import is_info

import jflows.models as jm
from jflows.bijectors import InverseNotConvergedError
from jflows.names import DIAGNOSTICS, PARAMS, SAMPLE


def stiff_flow(**kw):
    flow = jm.resflow((2,), n_blocks=2, hidden=(8,), last_init_scale=1.0, training=False, **kw)
    x = jax.random.normal(jax.random.key(0), (16, 2))
    return flow, flow.init({PARAMS: jax.random.key(1)}, x, method="log_prob")


@pytest.mark.slow
def test_checked_apply_raises_the_documented_exception():
    flow, variables = stiff_flow(inverse_max_iter=1)
    with pytest.raises(InverseNotConvergedError, match=r"did not converge.*inverse_max_iter"):
        jm.checked_apply(flow, variables, 32, method="sample", rngs={SAMPLE: jax.random.key(2)})


@pytest.mark.slow
def test_plain_jit_surfaces_as_a_jax_runtime_error():
    """The last line of defence, as documented: under a user's own jit JAX wraps the error."""
    flow, variables = stiff_flow(inverse_max_iter=1)
    sample = jax.jit(lambda v, k: flow.apply(v, 32, method="sample", rngs={SAMPLE: k}))
    with pytest.raises(Exception, match="did not converge") as err:
        jax.block_until_ready(sample(variables, jax.random.key(2)))
    assert not isinstance(err.value, InverseNotConvergedError)


@pytest.mark.slow
def test_collecting_diagnostics_leaves_the_check_to_the_caller():
    flow, variables = stiff_flow(inverse_max_iter=1)
    z = jax.random.normal(jax.random.key(3), (8, 2))
    x, sown = jax.jit(lambda v, z: flow.apply(v, z, method="inverse", mutable=[DIAGNOSTICS]))(
        variables, z
    )
    infos = [a for a in jax.tree_util.tree_leaves(sown, is_leaf=is_info) if is_info(a)]
    assert infos and not bool(np.all(infos[0].converged))


@pytest.mark.slow
def test_checked_apply_equals_apply_when_converged():
    flow, variables = stiff_flow()
    rngs = {SAMPLE: jax.random.key(4)}
    got = jm.checked_apply(flow, variables, 16, method="sample", rngs=rngs)
    want = flow.apply(variables, 16, method="sample", rngs=rngs)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    z = jnp.ones((3, 2))
    x, ld = jm.checked_apply(flow, variables, z, method="inverse_and_log_det")
    assert x.shape == (3, 2) and ld.shape == (3,)


@pytest.mark.slow
def test_cli_sample_with_a_cap_that_cannot_converge_is_one_line_and_exit_2(tmp_path, capsys):
    import jflows.cli

    out = tmp_path / "run"
    args = ["train", "--model", "resflow", "--data", "moons", "--out", str(out), "--steps", "3",
            "--opt", "n_blocks=2", "--opt", "hidden=(8,)", "--batch-size", "32"]
    assert jflows.cli.main(args) == 0
    capsys.readouterr()
    code = jflows.cli.main(["sample", "--run", str(out), "--n", "20", "--out",
                            str(tmp_path / "s.npy"), "--opt", "inverse_max_iter=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "did not converge" in err, err
    assert not (tmp_path / "s.npy").exists()
