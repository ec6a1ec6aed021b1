"""XLA:CPU options: classic emitters at LLVM level 2 for programs with convolutions, else XLA's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jflows import models
from jflows.errors import ConfigError
from jflows.training import create_train_state, make_train_step, trace_cache, xla_options
from jflows.training.xla_options import OPT_LEVEL, OPTION, compiler_options, has_convolution

CONV = {OPTION: False, OPT_LEVEL: 2}


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_options_by_platform_convolution_and_environment(monkeypatch):
    monkeypatch.delenv(xla_options.ENV, raising=False)
    assert compiler_options("cpu", convolution=True) == CONV
    assert compiler_options("cpu", convolution=False) == {}
    assert compiler_options("gpu", convolution=True) == {}
    monkeypatch.setenv(xla_options.ENV, "classic")
    assert compiler_options("cpu", convolution=False) == {OPTION: False}
    assert compiler_options("cpu", convolution=True) == CONV
    monkeypatch.setenv(xla_options.ENV, "Default")
    assert compiler_options("cpu", convolution=True) == {}
    monkeypatch.setenv(xla_options.ENV, "mlir")
    with pytest.raises(ConfigError, match=r"JFLOWS_CPU_FUSION_EMITTERS='mlir'.*auto"):
        compiler_options("cpu", convolution=True)


def test_convolutions_are_found_inside_loops_conditionals_and_custom_rules():
    x, k = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))

    def in_scan(x, k):
        return jax.lax.scan(lambda h, _: (_conv(h, k), None), x, None, length=2)[0]

    def in_cond(x, k):
        return jax.lax.cond(x.sum() > 0, lambda: _conv(x, k), lambda: x)

    @jax.custom_vjp
    def custom(x, k):
        return _conv(x, k)

    custom.defvjp(lambda x, k: (_conv(x, k), (x, k)), lambda res, g: res)

    def grad_of_nested_jit(x, k):
        return jax.grad(lambda k: jax.jit(_conv)(x, k).sum())(k)

    for fn in (in_scan, in_cond, custom, grad_of_nested_jit):
        assert has_convolution(jax.make_jaxpr(fn)(x, k)), fn
    assert not has_convolution(jax.make_jaxpr(lambda a, b: jnp.tanh(a @ b))(k[0, 0], k[0, 0]))


def _image_flow():
    """A one-block convolutional residual flow on 4x4x1 images."""
    return models.resflow((4, 4, 1), n_blocks=1, hidden=4, n_scales=1, fc_blocks=0,
                          actnorm=False)


def _step_options(flow, x):
    opt = optax.adam(1e-3)
    state = create_train_state(flow, opt, x, jax.random.key(0))
    step = make_train_step(flow, opt)
    state, metrics = step(state, x, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))
    return step.compiler_options


@pytest.mark.parametrize("cache", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["plain", "trace-cache"])
def test_train_steps_choose_by_their_program(cache, tmp_path, monkeypatch):
    monkeypatch.delenv(xla_options.ENV, raising=False)
    directory = str(tmp_path / "traces") if cache else None
    monkeypatch.setattr(trace_cache, "trace_cache_dir", lambda: directory)
    monkeypatch.setattr(trace_cache, "stats", dict.fromkeys(trace_cache.stats, 0))
    rng = np.random.default_rng(0)
    image = _image_flow()
    dense = models.realnvp((2,), n_couplings=2, hidden=(4,))
    conv_x = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    dense_x = rng.normal(size=(8, 2)).astype(np.float32)
    assert _step_options(image, conv_x) == CONV
    assert _step_options(dense, dense_x) == {}
    if cache:  # a restart loads the choice with the stored trace
        jax.clear_caches()
        assert _step_options(image, conv_x) == CONV
        assert trace_cache.stats["hits"] >= 2


@pytest.mark.parametrize("cache", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["plain", "trace-cache"])
@pytest.mark.parametrize("emitters", ["auto", pytest.param("classic", marks=pytest.mark.slow)])
def test_calls_nested_in_another_trace_compile_with_it(cache, emitters, tmp_path, monkeypatch):
    """``eval_shape`` of a state (the CLI's resume check) and a step inside an outer jit."""
    monkeypatch.setenv(xla_options.ENV, emitters)
    directory = str(tmp_path / "traces") if cache else None
    monkeypatch.setattr(trace_cache, "trace_cache_dir", lambda: directory)
    flow = _image_flow()
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 1)).astype(np.float32)
    opt = optax.adam(1e-3)
    shapes = jax.eval_shape(lambda b: create_train_state(flow, opt, b, jax.random.key(0)), x)
    state = create_train_state(flow, opt, x, jax.random.key(0))
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, state)
    step = make_train_step(flow, opt)
    loss = jax.jit(lambda s, b: step(s, b, jax.random.key(1))[1]["loss"])(state, x)
    assert np.isfinite(float(loss))
    assert step(state, x, jax.random.key(1))[1]["loss"] == pytest.approx(float(loss), rel=1e-4)
    assert step.compiler_options == CONV
