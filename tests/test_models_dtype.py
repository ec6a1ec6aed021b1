"""One dtype per model: parameters, power-iteration vectors, base draws and results.

The factories take ``dtype`` ("float32" by default, "float64" with ``JAX_ENABLE_X64=1``); a
:class:`~jflows.models.Flow` casts whatever it is given to that dtype at its boundary. The
``float64`` tests run in the CI's float64 pass (``JAX_ENABLE_X64=1 pytest -m float64``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import ConfigError
from jflows import models as jm
from jflows.bijectors import Kind
from jflows.names import LOGDET, NOISE, PARAMS, SAMPLE
from jflows.training import create_train_state, make_optimizer, make_train_step

X64 = bool(jax.config.jax_enable_x64)
needs_x64 = pytest.mark.skipif(not X64, reason="needs JAX_ENABLE_X64=1 (the float64 pass)")

SMALL = {
    "nice": ((4,), dict(hidden=(8,))),
    "realnvp": ((4,), dict(hidden=(8,), actnorm=True)),
    "glow": ((4, 4, 2), dict(levels=2, steps=1, hidden=4)),
    "resflow": ((4,), dict(n_blocks=2, hidden=(8,))),
    "iresnet": ((4,), dict(n_blocks=2, hidden=(8,))),
    "absolute": ((4,), dict(n_couplings=2, hidden=(8,), sign_hidden=(4,))),
    "augmented": ((3,), dict(augment=2, n_couplings=2, hidden=(8,), q_hidden=(4,))),
    "cif": ((3,), dict(layers=2, hidden=(8,), index_hidden=(4,))),
    "maxpool": ((8, 8, 1), dict(levels=2, steps=1, hidden=4, pool_hidden=4)),
    "mintnet": ((4, 4, 2), dict(stages=2, layers_per_stage=1, hidden=4)),
    "maf": ((3,), dict(n_layers=2, hidden=(8,))),
    "iaf": ((3,), dict(n_layers=2, hidden=(8,), transform="spline", num_bins=4)),
    "nsf": ((4,), dict(n_couplings=2, hidden=(8,), num_bins=4)),
}


def _build(name, **kw):
    assert name in SMALL, f"add a small configuration of the new model {name!r} to SMALL"
    shape, options = SMALL[name]
    return jm.MODELS[name](shape, **options, **kw), shape


def _data(shape, dtype, n=16):
    return 0.5 + 1.5 * jax.random.normal(jax.random.key(0), (n, *shape), dtype)


def _rngs():
    return {PARAMS: jax.random.key(1), LOGDET: jax.random.key(2), SAMPLE: jax.random.key(3),
            NOISE: jax.random.key(4)}


def _apply(flow, variables, *args, method):
    """``flow.apply`` under ``jit`` (eager image models dispatch thousands of small ops)."""
    return jax.jit(lambda v: flow.apply(v, *args, method=method, rngs=_rngs()))(variables)


def _init(flow, x):
    return jax.jit(lambda x: flow.init(_rngs(), x, method="log_prob"))(x)


def _float_dtypes(tree):
    return {str(a.dtype) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)}


@pytest.mark.float64
@needs_x64
@pytest.mark.parametrize("name", sorted(jm.MODELS))
def test_float64_models_are_float64_throughout(name):
    flow, shape = _build(name, dtype="float64")
    x = _data(shape, jnp.float32)  # float32 data are cast to the model's dtype
    variables = _init(flow, x)
    assert _float_dtypes(variables) == {"float64"}
    logp = _apply(flow, variables, x, method="log_prob")
    assert logp.dtype == jnp.float64
    samples = _apply(flow, variables, 7, method="sample")
    assert samples.dtype == jnp.float64 and samples.shape == (7, *shape)
    if flow.kind != Kind.BIJECTION:  # no exact log-det in the generative direction
        return
    xs, lp = _apply(flow, variables, 7, method="sample_and_log_prob")
    assert xs.dtype == lp.dtype == jnp.float64
    assert bool(jnp.all(jnp.isfinite(xs))) and bool(jnp.all(jnp.isfinite(lp)))


@pytest.mark.float64
@needs_x64
@pytest.mark.parametrize("name", [
    # the image models with the longest compiles run in the full float64 pass only
    pytest.param(n, marks=pytest.mark.slow) if n in {"mintnet", "glow", "maxpool", "iresnet"}
    else n for n in sorted(jm.MODELS)])
def test_default_models_stay_float32_on_float64_data(name):
    """A float32 model scores float64 input in float32 (cast at the Flow boundary)."""
    flow, shape = _build(name)
    x = _data(shape, jnp.float64)
    variables = _init(flow, x)
    assert _float_dtypes(variables) == {"float32"}
    assert _apply(flow, variables, x, method="log_prob").dtype == jnp.float32
    assert _apply(flow, variables, 3, method="sample").dtype == jnp.float32


@pytest.mark.float64
@needs_x64
def test_float64_training_step_keeps_the_dtype():
    flow, shape = _build("resflow", dtype="float64")
    x = _data(shape, jnp.float32, n=32)
    optimizer = make_optimizer(1e-3)
    state = create_train_state(flow, optimizer, x, jax.random.key(0))
    step = make_train_step(flow, optimizer)
    before = jax.tree.map(lambda a: a.dtype, state)
    state, metrics = step(state, x, jax.random.key(1))
    assert metrics["loss"].dtype == jnp.float64 and np.isfinite(float(metrics["loss"]))
    assert jax.tree.map(lambda a: a.dtype, state) == before
    assert _float_dtypes(state.params) == {"float64"}


@pytest.mark.skipif(X64, reason="checks the float32-only session")
def test_float64_without_x64_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"realnvp: dtype='float64' needs 64-bit JAX.*"
                                          r"JAX_ENABLE_X64=1"):
        jm.realnvp((2,), dtype="float64")


@pytest.mark.parametrize("dtype", ["float16", "int32", "double-ish"])
def test_unknown_dtypes_are_refused(dtype):
    with pytest.raises(ConfigError, match=r"resflow: dtype must be one of \('float32', "):
        jm.resflow((2,), dtype=dtype)


def test_dtype_accepts_numpy_and_jax_spellings():
    flow = jm.nice((2,), hidden=(4,), dtype=np.float32)
    assert flow.dtype == "float32" and flow.base.dtype == "float32"
    assert jm.realnvp((2,), dtype=jnp.float32).dtype == "float32"


@pytest.mark.float64
@needs_x64
def test_stack_carry_keeps_its_dtype_with_wider_parameters():
    """float64 parameters on float32 data: the scan's carry stays float32 (no scan TypeError)."""
    from jflows import bijectors as jb

    stack = jb.Stack(lambda: jb.Chain([jb.ActNorm(param_dtype="float64"),
                                       jb.SplitCoupling(1, 0, jb.MLP((8,)))]), 2)
    x = _data((4,), jnp.float32)
    variables = stack.init(jax.random.key(0), x, method="forward_and_log_det")
    assert _float_dtypes(variables) == {"float64"}
    z, logdet = stack.apply(variables, x, method="forward_and_log_det")
    assert z.dtype == jnp.float32 and logdet.shape == (16,)
    xr = stack.apply(variables, z, method="inverse")
    assert xr.dtype == jnp.float32
    np.testing.assert_allclose(xr, x, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(X64, reason="checks the float32-only session")
def test_cli_refuses_float64_without_x64_before_writing(tmp_path, capsys):
    from jflows.cli import main

    out = tmp_path / "run"
    code = main(["train", "--model", "realnvp", "--data", "moons", "--out", str(out),
                 "--steps", "2", "--quiet", "--opt", "dtype=float64"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "JAX_ENABLE_X64=1" in err and not out.exists()
