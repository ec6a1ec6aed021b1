"""MintNet: masked convolutions, the Mint layer and the model, against brute force.

The contract suite (tests/registry.py: mint_lower, mint_upper_leaky_relu, model_mintnet_small)
checks round trips, log-dets against slogdet, jit, vmap and float64; here: the triangular
structure, the diagonal, tight round trips, non-convergence and gradients through the inverse.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflows import models as jm
from jflows.bijectors import InverseNotConvergedError, MintLayer
from jflows.errors import ConfigError
from jflows.kernels.masked_conv import (
    MintWeights,
    conv_mask,
    masked_conv,
    mint_forward,
    mint_inverse,
)
from jflows.names import DIAGNOSTICS

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
TOL = 1e-10 if X64 else 1e-5
SHAPE = (4, 4, 2)
D = int(np.prod(SHAPE))


def _allowed(shape, out_channels, in_channels, upper, diagonal):
    """Brute-force dependency pattern: output (p, o) may see input (q, i) iff (q, c(i)) <= ..."""
    h, w, c = shape
    allowed = np.zeros((h * w, out_channels, h * w, in_channels), bool)
    for p in range(h * w):
        for q in range(h * w):
            for o in range(out_channels):
                for i in range(in_channels):
                    before = q < p if not upper else q > p
                    same = i % c <= o % c if not upper else i % c >= o % c
                    strict = i % c != o % c
                    allowed[p, o, q, i] = before or (q == p and same and (diagonal or strict))
    return allowed.reshape(h * w * out_channels, h * w * in_channels)


def _kernel(key, k, cin, cout, mask):
    return jax.random.normal(key, (k, k, cin, cout), DTYPE) * jnp.asarray(mask, DTYPE)


@pytest.mark.float64
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("diagonal", [True, False])
def test_masked_conv_jacobian_is_exactly_triangular(upper, diagonal):
    c = SHAPE[-1]
    w = _kernel(jax.random.key(0), 3, c, c, conv_mask(3, c, c, c, upper=upper, diagonal=diagonal))
    x = jax.random.normal(jax.random.key(1), (D,), DTYPE)
    jac = np.asarray(jax.jacfwd(lambda e: masked_conv(e.reshape(SHAPE), w).reshape(D))(x))
    off = np.triu(jac, 1) if not upper else np.tril(jac, -1)
    assert np.all(off == 0.0)  # exactly zero above (below) the diagonal
    np.testing.assert_array_equal(jac != 0, _allowed(SHAPE, c, c, upper, diagonal) & (jac != 0))
    if diagonal:
        assert np.all(np.diag(jac) != 0)
    else:
        assert np.all(np.diag(jac) == 0)


@pytest.mark.parametrize("upper", [False, True])
def test_masked_conv_into_hidden_groups_keeps_the_order(upper):
    """C -> G*C channels: hidden channel h plays channel h % C (whole pattern, brute force)."""
    c, hidden = SHAPE[-1], 6
    mask = conv_mask(3, c, hidden, c, upper=upper)
    w = _kernel(jax.random.key(2), 3, c, hidden, mask)
    x = jax.random.normal(jax.random.key(3), (D,), DTYPE)
    jac = np.asarray(jax.jacfwd(lambda e: masked_conv(e.reshape(SHAPE), w).reshape(-1))(x))
    allowed = _allowed(SHAPE, hidden, c, upper, True)
    assert not np.any(jac[~allowed])
    # nothing allowed is masked away: interior pixel (1, 1) sees every allowed tap
    row = (1 * SHAPE[1] + 1) * hidden
    inside = np.zeros_like(allowed)
    for q in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]:
        start = (q[0] * SHAPE[1] + q[1]) * c
        inside[row:row + hidden, start:start + c] = True
    assert np.all(jac[inside & allowed] != 0)


def test_conv_mask_refuses_bad_shapes():
    with pytest.raises(ConfigError, match="odd"):
        conv_mask(2, 1, 1, 1)
    with pytest.raises(ConfigError, match="multiples"):
        conv_mask(3, 2, 3, 2)
    with pytest.raises(ConfigError, match="multiple of the image's 2 channels"):
        MintLayer(hidden=3).init(jax.random.key(0), jnp.zeros((1, *SHAPE)))


def _weights(key, c=SHAPE[-1], hidden=4, scale=0.3):
    shapes = [(3, 3, c, hidden), (hidden,), (3, 3, hidden, hidden), (hidden,), (3, 3, hidden, c),
              (c,), SHAPE]
    keys = jax.random.split(key, len(shapes))
    return MintWeights(*(scale * jax.random.normal(k, s, DTYPE) for k, s in zip(keys, shapes)))


@pytest.mark.float64
@pytest.mark.parametrize(("upper", "activation"),
                         [(False, "elu"), (True, "elu"), (False, "leaky_relu")])
def test_mint_jacobian_is_triangular_with_the_computed_diagonal(upper, activation):
    w = _weights(jax.random.key(4))
    x = jax.random.normal(jax.random.key(5), SHAPE, DTYPE)
    kw = dict(upper=upper, activation=activation)
    flat = lambda e: mint_forward(w, e.reshape(SHAPE), 2, **kw)[0].reshape(D)  # noqa: E731
    jac = np.asarray(jax.jit(jax.jacfwd(flat))(x.reshape(D)))
    off = np.triu(jac, 1) if not upper else np.tril(jac, -1)
    assert np.all(off == 0.0)
    _, diag = mint_forward(w, x, 2, **kw)
    np.testing.assert_allclose(np.diag(jac), np.asarray(diag).reshape(D), rtol=TOL * 10, atol=TOL)
    assert np.all(np.asarray(diag) > 0)  # the sign rule keeps the diagonal positive
    sign, logdet = np.linalg.slogdet(jac)
    assert sign == 1.0
    np.testing.assert_allclose(np.sum(np.log(np.asarray(diag))), logdet, rtol=TOL * 10)


def _perturbed_layer(upper=False, scale=0.1, **kw):
    """A layer whose parameters carry N(0, scale^2) noise (far from the near-identity init)."""
    layer = MintLayer(hidden=4, upper=upper, **kw)
    x = 0.5 + 1.5 * jax.random.normal(jax.random.key(6), (3, *SHAPE), DTYPE)
    variables = jax.jit(layer.init)(jax.random.key(7), x)
    leaves, tree = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.key(8), len(leaves))
    leaves = [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return layer, {"params": jax.tree.unflatten(tree, leaves)}, x


@pytest.fixture(scope="module", params=[False, True], ids=["lower", "upper"])
def perturbed(request):
    """A perturbed layer (inverse tolerance 1e-6 in float32), its data and jitted methods."""
    tol = {} if X64 else dict(inverse_atol=1e-6, inverse_rtol=1e-6)
    layer, variables, x = _perturbed_layer(request.param, **tol)
    forward = jax.jit(lambda e: layer.apply(variables, e, method="forward"))
    inverse = jax.jit(lambda e: layer.apply(variables, e, method="inverse",
                                            mutable=[DIAGNOSTICS]))
    return layer, variables, x, forward, inverse


@pytest.mark.float64
def test_layer_logdet_is_the_sum_of_log_diagonal_of_the_brute_force_jacobian(perturbed):
    layer, variables, x, forward, _ = perturbed
    logdet = jax.jit(layer.apply)(variables, x)[1]
    fwd = lambda e: forward(e.reshape(SHAPE)).reshape(D)  # noqa: E731
    jacs = jax.jit(jax.vmap(jax.jacfwd(fwd)))(x.reshape(3, D))
    off = jnp.triu(jacs, 1) if not layer.upper else jnp.tril(jacs, -1)
    assert bool(jnp.all(off == 0.0))
    brute = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(jacs, axis1=1, axis2=2))), axis=-1)
    np.testing.assert_allclose(logdet, brute, rtol=TOL * 10, atol=TOL * 10)
    np.testing.assert_allclose(logdet, jnp.linalg.slogdet(jacs)[1], rtol=TOL * 10, atol=TOL * 10)


@pytest.mark.float64
def test_round_trip_within_1e_5(perturbed):
    _, _, x, forward, inverse = perturbed
    xr, sown = inverse(forward(x))
    assert float(jnp.max(jnp.abs(xr - x))) < (1e-9 if X64 else 1e-5)
    (info,) = sown[DIAGNOSTICS]["inverse"]
    assert bool(info.converged) and 1 < int(info.iterations) < 200


@pytest.mark.slow  # the model-level test below keeps non-convergence in the fast loop
def test_nonconvergence_is_reported_never_silent():
    layer, variables, x = _perturbed_layer(inverse_max_iter=1)
    z = layer.apply(variables, x, method="forward")
    with pytest.raises(InverseNotConvergedError, match="did not converge"):
        layer.apply(variables, z, method="inverse")
    nan_layer = layer.clone(on_nonconvergence="nan")
    assert bool(jnp.all(jnp.isnan(nan_layer.apply(variables, z, method="inverse"))))
    quiet = layer.clone(on_nonconvergence="ignore")
    _, sown = quiet.apply(variables, z, method="inverse", mutable=[DIAGNOSTICS])
    (info,) = sown[DIAGNOSTICS]["inverse"]
    assert not bool(info.converged) and int(info.iterations) == 1


def test_model_nonconvergence_raises_through_checked_apply():
    flow = jm.mintnet((4, 4, 1), stages=1, layers_per_stage=1, hidden=2, actnorm=False,
                      inverse_max_iter=1)
    x = jax.random.normal(jax.random.key(9), (2, 4, 4, 1))
    variables = jax.jit(lambda k, e: flow.init(k, e, method="log_prob"))(jax.random.key(10), x)
    variables = jax.tree.map(lambda p: p + 0.1, variables)
    z = flow.apply(variables, x, method="forward")
    with pytest.raises(InverseNotConvergedError, match="did not converge"):
        jm.checked_apply(flow, variables, z, method="inverse")


def _unrolled_inverse(w, z, n=150, damping=0.5):
    """The same damped iteration, unrolled: autodiff through it is the exact inverse's gradient."""

    def step(_, x):
        fx, d = mint_forward(w, x, 2)
        return x - damping * (fx - z) / d

    return jax.lax.fori_loop(0, n, step, z * jnp.exp(-w.log_t))


@pytest.mark.float64
def test_implicit_gradients_through_the_inverse_match_the_unrolled_iteration():
    w = _weights(jax.random.key(11), scale=0.2)
    z = jax.random.normal(jax.random.key(12), SHAPE, DTYPE)
    probe = jax.random.normal(jax.random.key(13), SHAPE, DTYPE)

    def implicit(w, z):
        x, _ = mint_inverse(w, z, 2, atol=TOL * 1e-2, rtol=TOL * 1e-2,
                            on_nonconvergence="raise")
        return jnp.sum(probe * x)

    def unrolled(w, z):
        return jnp.sum(probe * _unrolled_inverse(w, z))

    g_imp = jax.jit(jax.grad(implicit, argnums=(0, 1)))(w, z)
    g_unr = jax.jit(jax.grad(unrolled, argnums=(0, 1)))(w, z)
    for a, b in zip(jax.tree.leaves(g_imp), jax.tree.leaves(g_unr)):
        np.testing.assert_allclose(a, b, rtol=1e-3 if not X64 else 1e-7,
                                   atol=1e-4 if not X64 else 1e-9)
    # and a directional finite difference in z
    eps = 1e-6 if X64 else 1e-2
    value = jax.jit(implicit)
    fd = (value(w, z + eps * probe) - value(w, z - eps * probe)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(g_imp[1] * probe), fd, rtol=1e-6 if X64 else 2e-2)


def test_a_pair_lets_every_output_see_every_input():
    """Lower then upper: the model's Jacobian is dense (no pixel is blind to the others)."""
    flow = jm.mintnet((4, 4, 1), stages=1, layers_per_stage=1, hidden=2, actnorm=False)
    x = jax.random.normal(jax.random.key(14), (1, 4, 4, 1))
    variables = jax.jit(lambda k, e: flow.init(k, e, method="log_prob"))(jax.random.key(15), x)
    variables = jax.tree.map(lambda p: p + 0.1, variables)
    jac = jax.jit(jax.jacfwd(lambda e: flow.apply(variables, e.reshape(1, 4, 4, 1),
                                                  method="forward").reshape(16)))(x.reshape(16))
    assert np.all(np.asarray(jac) != 0)


def test_mintnet_refuses_vectors_and_indivisible_images():
    with pytest.raises(ConfigError, match="mintnet models images"):
        jm.mintnet((4,))
    with pytest.raises(ConfigError, match="divisible by 4"):
        jm.mintnet((6, 6, 1), stages=3)


def test_mintnet_trains_at_lr_2e_3_on_images_by_default(capsys):
    from jflows.cli import main
    from jflows.training.defaults import DEFAULTS, MODEL_DEFAULTS

    assert MODEL_DEFAULTS[("mintnet", "image")]["lr"] == 2e-3 != DEFAULTS["image"]["lr"]
    assert main(["train", "--help"]) == 0
    assert "0.002 for mintnet on images" in " ".join(capsys.readouterr().out.split())


def test_inverse_damping_is_an_evaluation_time_option():
    """Like the residual flows' inverse_max_iter: eval/sample/resume may change it, as it
    leaves the parameters alone (it sets only the step of the inverse iteration)."""
    from jflows.training.run_config import RunConfig
    from jflows.training.runs import EVAL_OPTIONS, build_model, with_eval_options

    assert "inverse_damping" in EVAL_OPTIONS
    options = {"hidden": 2, "layers_per_stage": 1, "stages": 1, "inverse_damping": 0.5}
    config = RunConfig.from_dict({"model": "mintnet", "options": options, "data": "digits",
                                  "data_name": "digits", "kind": "image", "levels": 17,
                                  "event_shape": [4, 4, 1]})
    changed = with_eval_options(config, {"inverse_damping": 0.8})
    assert changed["options"] == {**options, "inverse_damping": 0.8}
    assert config["options"]["inverse_damping"] == 0.5
    x, rngs = jnp.zeros((1, 4, 4, 1)), {"params": jax.random.key(0), "dequant": jax.random.key(1)}
    shapes = [jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(
        build_model(c, training=False).init, rngs, x)) for c in (config, changed)]
    assert shapes[0] == shapes[1]  # the same parameters: a trained run's checkpoint loads
    with pytest.raises(ConfigError, match="inverse_damping must lie in"):
        jax.eval_shape(build_model(with_eval_options(config, {"inverse_damping": 2.5})).init,
                       rngs, x)
    with pytest.raises(ConfigError, match="architecture.*inverse_damping"):
        with_eval_options(config, {"kernel_size": 5})


def test_mintnet_glow_and_maxpool_share_the_image_size_check():
    with pytest.raises(ConfigError, match="; for vectors use realnvp or resflow"):
        jm.mintnet((4,))
    with pytest.raises(ConfigError, match="mintnet with stages=0 needs"):
        jm.mintnet((4, 4, 1), stages=0)
    with pytest.raises(ConfigError, match=r"\(and layers_per_stage >= 1\), got 4x4, layers_"):
        jm.mintnet((4, 4, 1), layers_per_stage=0)
    jm.mintnet((6, 6, 1), stages=1)  # no squeeze: any height and width
    with pytest.raises(ConfigError, match=r"glow with levels=1 needs H and W divisible by 2 "
                                          r"\(and steps >= 1\), got 4x4, steps=0"):
        jm.glow((4, 4, 1), levels=1, steps=0)
    with pytest.raises(ConfigError, match="maxpool models images"):
        jm.maxpool((4,))
    with pytest.raises(ConfigError, match="maxpool with levels=2 needs H and W divisible by 4"):
        jm.maxpool((6, 6, 1), levels=2)


@pytest.mark.slow
def test_cli_trains_mintnet_on_digits_and_reports_bits_per_dim(tmp_path):
    from jflows.cli import main

    out = tmp_path / "mint"
    assert main(["train", "--model", "mintnet", "--data", "digits", "--out", str(out),
                 "--steps", "3", "--batch-size", "16", "--quiet", "--opt", "hidden=4",
                 "--opt", "layers_per_stage=1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "config.json").read_text())["lr"] == 2e-3  # mintnet's default
    bpd = metrics["test_bits_per_dim_bound"]  # uniform dequantization: a bound
    assert np.isfinite(bpd) and 0.0 < bpd < 10.0
    assert (out / "samples.png").stat().st_size > 0
    samples = tmp_path / "s.npy"  # an evaluation-time option, for this command only
    assert main(["sample", "--run", str(out), "--n", "2", "--out", str(samples),
                 "--opt", "inverse_damping=0.8"]) == 0
    assert np.load(samples).shape == (2, 8, 8, 1)
    assert "inverse_damping" not in json.loads((out / "config.json").read_text())["options"]
