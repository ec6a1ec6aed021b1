"""Bi-Lipschitz diagnostics: power-iteration estimates against exact singular values.

The reference is ``jnp.linalg.svd`` of the full Jacobian (``jax.jacfwd``, or ``jax.jacrev`` for
fixed-point inverses, which have reverse-mode derivatives only). Model parameters are perturbed
away from their identity initialisation so the Jacobians have spread singular values.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randn

import jflows.models as jm
from jflows.errors import ConfigError, NotBijectiveError
from jflows.kernels import local_inverse_lipschitz, local_lipschitz, top_singular_value

DTYPE = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
RTOL = 1e-9 if jnp.float64 == DTYPE else 1e-4
MODEL_RTOL = 0.01  # the criterion: within 1 % of the exact largest singular value


def _singular_values(jacobians):
    j = np.asarray(jacobians, np.float64)
    return np.linalg.svd(j.reshape(j.shape[0], -1, j.shape[-1]), compute_uv=False)


def _perturbed(variables, seed, scale=0.3):
    leaves, tree = jax.tree.flatten(variables["params"])
    rng = np.random.default_rng(seed)
    noisy = [leaf + scale * rng.standard_normal(leaf.shape).astype(leaf.dtype) for leaf in leaves]
    return {**variables, "params": jax.tree.unflatten(tree, noisy)}


def _exact(flow, variables, points, method, jac=jax.jacfwd):
    """Largest and smallest singular values of the Jacobian of ``method`` at every point."""
    def one(e):
        return jac(lambda a: flow.apply(variables, a[None], method=method)[0].ravel())(e)

    j = jax.jit(jax.vmap(one))(points)
    s = _singular_values(j.reshape(len(points), j.shape[1], -1))
    return s[:, 0], s[:, -1]


# ---------------------------------------------------------------- kernels (analytic values)


@pytest.mark.float64
def test_kernels_match_svd_of_a_nonlinear_map_on_matrix_events():
    a = randn(0, (6, 6), DTYPE) + 2 * jnp.eye(6, dtype=DTYPE)

    def fn(e):  # events of shape (2, 3); a smooth bijection near 0 (tanh keeps it invertible)
        v = e.ravel()
        return (a @ v + 0.3 * jnp.tanh(v)).reshape(2, 3)

    x = randn(1, (5, 2, 3), DTYPE)
    jac = jax.vmap(jax.jacfwd(lambda v: fn(v.reshape(2, 3)).ravel()))(x.reshape(5, 6))
    s = _singular_values(jac)
    key = jax.random.key(3)
    est = local_lipschitz(fn, x, key, iterations=2000, tol=0.0)  # until it stops changing
    np.testing.assert_allclose(est.values, s[:, 0], rtol=RTOL)
    assert (np.asarray(est.iterations) < 2000).all()
    inv = local_inverse_lipschitz(fn, x, key, iterations=2000, tol=0.0)
    np.testing.assert_allclose(inv.values, 1 / s[:, -1], rtol=100 * RTOL)


@pytest.mark.float64
def test_top_singular_value_rectangular_zero_and_tolerance():
    m = randn(2, (3, 5), DTYPE)
    sigma, steps = top_singular_value(lambda v: m @ v, lambda u: m.T @ u,
                                      jnp.ones(5, DTYPE), 5000, 0.0)
    assert float(sigma) == pytest.approx(float(np.linalg.svd(m, compute_uv=False)[0]), rel=RTOL)
    _, capped = top_singular_value(lambda v: m @ v, lambda u: m.T @ u, jnp.ones(5, DTYPE), 3, 0.0)
    assert int(capped) == 3
    zero, _ = top_singular_value(lambda v: 0 * v, lambda u: 0 * u, jnp.ones(2, DTYPE), 10, 0.0)
    assert float(zero) == 0.0  # a zero Jacobian gives 0, not NaN
    _, early = top_singular_value(lambda v: m @ v, lambda u: m.T @ u,
                                  jnp.ones(5, DTYPE), 5000, 1e-3)
    assert 2 <= int(early) < int(steps)  # a looser tolerance stops the loop earlier
    with pytest.raises(ConfigError, match="iterations"):
        local_lipschitz(jnp.sin, jnp.ones((1, 2)), jax.random.key(0), iterations=0)


# ---------------------------------------------------------------- models (forward and inverse)


def _check_model(flow, x, seed, jac_inverse=jax.jacfwd, method="direct"):
    variables = _perturbed(flow.init(jax.random.key(seed), x), seed)
    report = jm.bi_lipschitz(flow, variables, x, key=jax.random.key(seed + 1))
    z = flow.apply(variables, x, method="forward")
    forward, _ = _exact(flow, variables, x, "forward")
    inverse, _ = _exact(flow, variables, z, "inverse", jac=jac_inverse)
    np.testing.assert_allclose(report.forward.values, forward, rtol=MODEL_RTOL)
    np.testing.assert_allclose(report.inverse.values, inverse, rtol=MODEL_RTOL)
    assert report.inverse_method == method
    assert report.forward.max == pytest.approx(forward.max(), rel=MODEL_RTOL)
    assert report.bi_lipschitz == pytest.approx(forward.max() * inverse.max(), rel=2 * MODEL_RTOL)
    assert report.inversion_error < 1e-3
    assert report.forward.quantiles[0.5] == pytest.approx(np.median(report.forward.values))
    return report


@pytest.mark.parametrize("d", [2, 4])
def test_realnvp_vectors(d):
    flow = jm.realnvp((d,), n_couplings=2, hidden=(8,))
    report = _check_model(flow, randn(d, (16, d)), seed=d)
    assert report.bi_lipschitz > 1.5  # perturbed couplings are far from an isometry
    figures = report.figures()
    assert {"forward_max", "forward_q50", "forward_q90", "forward_q99", "inverse_max",
            "inverse_q99", "bi_lipschitz", "points"} <= set(figures)
    json.dumps(figures)  # JSON-ready


def _after_dequantizer(inverse=False):
    """Flax methods running a flow's layers after its first (the dequantizer)."""
    def forward(m, e):
        for layer in m.bijector.bijectors[1:]:
            e = layer.forward(e)
        return e

    def backward(m, e):
        for layer in reversed(m.bijector.bijectors[1:]):
            e = layer.inverse(e)
        return e

    return backward if inverse else forward


@pytest.mark.slow
def test_glow_tiny_image_after_its_dequantizer():
    shape = (4, 4, 1)
    flow = jm.glow(shape, levels=1, steps=1, hidden=4, preprocessing=jm.image_preprocessing(17))
    k = jnp.asarray(np.random.default_rng(8).integers(0, 17, (6, *shape)), jnp.float32)
    variables = _perturbed(flow.init({"params": jax.random.key(8),
                                      "dequant": jax.random.key(9)}, k), 8)
    x = k + jnp.asarray(np.random.default_rng(9).uniform(size=k.shape), jnp.float32)
    key = jax.random.key(1)
    report = jm.bi_lipschitz(flow, variables, x, key=key, dequantized=True)
    z = flow.apply(variables, x, method=_after_dequantizer())
    forward, _ = _exact(flow, variables, x, _after_dequantizer())
    inverse, _ = _exact(flow, variables, z, _after_dequantizer(inverse=True))
    np.testing.assert_allclose(report.forward.values, forward, rtol=MODEL_RTOL)
    np.testing.assert_allclose(report.inverse.values, inverse, rtol=MODEL_RTOL)
    assert report.measured == "f: dequantized data -> latent" and report.inversion_error < 1e-3
    drawn = jm.bi_lipschitz(flow, variables, k, key=key)  # integer levels: dequantized inside
    assert np.isfinite(drawn.forward.values).all() and drawn.inversion_error < 1e-3
    assert not np.allclose(drawn.forward.values, report.forward.values)  # other points
    rest = jm.realnvp((2,), n_couplings=2, hidden=(4,))
    with pytest.raises(ConfigError, match="no dequantization layer"):
        jm.bi_lipschitz(rest, {}, jnp.ones((1, 2)), dequantized=True)


@pytest.mark.slow
def test_resflow_exact_logdet_uses_the_implicit_inverse():
    flow = jm.resflow((2,), n_blocks=1, hidden=(8,), logdet="exact", training=False)
    # the fixed-point inverse has reverse-mode derivatives only: jacrev is the reference
    _check_model(flow, randn(7, (16, 2)), seed=7, jac_inverse=jax.jacrev, method="implicit")


@pytest.mark.slow
def test_mintnet_tiny_image():
    flow = jm.mintnet((2, 2, 1), stages=1, layers_per_stage=2, hidden=4)
    x = randn(10, (4, 2, 2, 1))
    variables = _perturbed(flow.init(jax.random.key(10), x), 10, scale=0.05)
    report = jm.bi_lipschitz(flow, variables, x, key=jax.random.key(11))
    z = flow.apply(variables, x, method="forward")
    forward, _ = _exact(flow, variables, x, "forward")
    inverse, _ = _exact(flow, variables, z, "inverse", jac=jax.jacrev)
    np.testing.assert_allclose(report.forward.values, forward, rtol=MODEL_RTOL)
    np.testing.assert_allclose(report.inverse.values, inverse, rtol=MODEL_RTOL)
    assert report.inverse_method == "implicit"


def _exact_indexed(flow, variables, points, indices, method, jac=jax.jacfwd):
    """Singular values of the per-index map ``method(x, u)`` at every point, ``u`` fixed."""
    def one(e, u):
        u1 = jax.tree.map(lambda a: a[None], u)
        return jac(lambda a: flow.apply(variables, a[None], u1, method=method)[0])(e)

    return _singular_values(jax.jit(jax.vmap(one))(points, indices))


@pytest.mark.parametrize(("base_model", "jac_inverse", "method"), [
    pytest.param("realnvp", jax.jacfwd, "direct", marks=pytest.mark.slow),
    pytest.param("resflow", jax.jacrev, "implicit", marks=pytest.mark.slow)])
def test_cif_per_index_maps_match_svd_with_the_index_held(base_model, jac_inverse, method):
    from jflows.models.measured_map import measured_map
    kw = {"logdet": "exact", "training": False} if base_model == "resflow" else {}
    flow = jm.cif((2,), base_model=base_model, layers=2, hidden=(8,), index_hidden=(4,),
                  index_init="random", **kw)
    x = randn(12, (16, 2))
    variables = _perturbed(flow.init({"params": jax.random.key(12), "noise": jax.random.key(13)},
                                     x), 12, scale=0.2)
    key = jax.random.key(14)
    report = jm.bi_lipschitz(flow, variables, x, key=key, index="sample")
    target = measured_map(flow, "sample")
    # the indices bi_lipschitz held: drawn from q(u | x) with the first of key's three splits
    _, indices = flow.apply(variables, x, method=target.prepare,
                            rngs={"noise": jax.random.split(key, 3)[0]})
    assert len(indices) == 2 and indices[0].shape == (16, 1)
    z = flow.apply(variables, x, indices, method=target.forward)
    forward = _exact_indexed(flow, variables, x, indices, target.forward)[:, 0]
    inverse = _exact_indexed(flow, variables, z, indices, target.inverse, jac=jac_inverse)[:, 0]
    np.testing.assert_allclose(report.forward.values, forward, rtol=MODEL_RTOL)
    np.testing.assert_allclose(report.inverse.values, inverse, rtol=MODEL_RTOL)
    assert report.inverse_method == method and report.inversion_error < 1e-3
    assert report.measured.startswith("F(.; u)") and "u ~ q(u | x)" in report.measured
    mean = jm.bi_lipschitz(flow, variables, x, key=jax.random.key(15))  # the default
    assert "mean of q(u | x)" in mean.measured and np.isfinite(mean.bi_lipschitz)
    assert not np.allclose(mean.forward.values, report.forward.values)  # other indices
    mean_target = measured_map(flow)
    _, means = flow.apply(variables, x, method=mean_target.prepare)  # no draw: no stream
    forward = _exact_indexed(flow, variables, x, means, mean_target.forward)[:, 0]
    np.testing.assert_allclose(mean.forward.values, forward, rtol=MODEL_RTOL)


def test_index_only_for_indexed_flows():
    flow = jm.realnvp((2,), n_couplings=2, hidden=(4,))
    x = randn(9, (4, 2))
    with pytest.raises(ConfigError, match="only applies to continuously indexed"):
        jm.bi_lipschitz(flow, flow.init(jax.random.key(0), x), x, index="mean")
    cif = jm.cif((2,), layers=1, hidden=(4,), index_hidden=(4,))
    with pytest.raises(ConfigError, match="index must be one of"):
        jm.bi_lipschitz(cif, {}, x, index="median")


def test_non_bijective_model_raises_naming_the_fix():
    flow = jm.absolute((2,), n_couplings=2, hidden=(4,))
    x = randn(9, (4, 2))
    variables = flow.init(jax.random.key(0), x)
    with pytest.raises(NotBijectiveError, match=r"bijective.*image_preprocessing\(levels\)\[1:\]"):
        jm.bi_lipschitz(flow, variables, x)
    with pytest.raises(ConfigError, match="inverse_method"):
        jm.bi_lipschitz(jm.realnvp((2,), n_couplings=2, hidden=(4,)), {}, x, inverse_method="x")


# ---------------------------------------------------------------- command line


@pytest.mark.slow
def test_cli_eval_lipschitz_writes_figures_and_picture(tmp_path, capsys):
    from jflows.cli import main

    out = tmp_path / "moons"
    assert main(["train", "--model", "realnvp", "--data", "moons", "--out", str(out),
                 "--steps", "4", "--eval-every", "4", "--checkpoint-every", "4", "--quiet",
                 "--opt", "n_couplings=2", "--opt", "hidden=(8,)", "--batch-size", "64"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--data", "moons", "--lipschitz",
                 "--lipschitz-points", "200"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and printed[1].startswith("Lipschitz estimates: Lip(f) ")
    record = json.loads((out / "eval.json").read_text())["lipschitz"]
    assert record["points"] == 200 and record["picture"] == "lipschitz.png"
    for name in ("forward", "inverse"):
        values = [record[f"{name}_q50"], record[f"{name}_q90"], record[f"{name}_q99"],
                  record[f"{name}_max"]]
        assert all(np.isfinite(values)) and values == sorted(values)
    assert record["bi_lipschitz"] == pytest.approx(record["forward_max"] * record["inverse_max"])
    assert (out / "lipschitz.png").stat().st_size > 10_000
    plane = record["plane"]  # the 100 x 100 grid of the picture, gaps between the moons included
    assert plane["points"] == 10_000 and len(plane["bounds"]) == 2
    assert plane["bi_lipschitz"] == pytest.approx(plane["forward_max"] * plane["inverse_max"])
    assert "over the plane" in printed[1]
