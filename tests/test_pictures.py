"""Run pictures: 1-D, 2-D, 5-D vectors and images; titles; non-finite models skipped, not fatal."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jflows import bijectors as jb
from jflows import models as jm
from jflows.bijectors.residual import InverseNotConvergedError
from jflows.data import Dataset, vector_stats
from jflows.training import create_train_state, pictures
from jflows.training.pictures import save_run_pictures, save_samples_picture


def vector_case(d, n=400):
    rng = np.random.default_rng(d)
    x = (rng.normal(size=(n, d)) * np.arange(1, d + 1)).astype(np.float32)
    ds = Dataset("toy", x[:300], x[300:], "vector", None, (d,))
    pre = jm.vector_preprocessing(*vector_stats(ds.train))
    model = jm.Flow(jb.Chain([*pre, jb.ActNorm()]), jm.StandardNormal((d,)), event_shape=(d,))
    state = create_train_state(model, optax.adam(1e-3), ds.train, jax.random.key(0))
    return ds, model, state


def image_case():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, size=(40, 8, 8, 1)).astype(np.uint8)
    ds = Dataset("imgs", x[:30], x[30:], "image", 17, (8, 8, 1))
    pre = jm.image_preprocessing(17)
    model = jm.realnvp((8, 8, 1), n_levels=1, n_checkerboard=1, conv_hidden=8,
                       preprocessing=pre)
    state = create_train_state(model, optax.adam(1e-3), ds.train, jax.random.key(0))
    return ds, model, state


def draw(tmp_path, ds, model, state, **kw):
    return save_run_pictures(tmp_path, model, state, ds, key=jax.random.key(1), n_samples=300,
                             eval_batch_size=2000, model_name="actnorm", step=7,
                             record={"test_nll": 1.25, "step": 7}, **kw)


def names(paths):
    assert all(os.path.getsize(p) > 0 for p in paths)
    return sorted(os.path.basename(p) for p in paths)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_vector_pictures(tmp_path, d):
    paths = draw(tmp_path, *vector_case(d))
    expected = ["density.png", "samples.png"] if d <= 2 else ["samples.png"]
    assert names(paths) == expected


def test_image_pictures(tmp_path):
    ds, model, state = image_case()
    paths = draw(tmp_path, ds, model, state, temperature=0.7)
    assert names(paths) == ["samples.png"]


@pytest.mark.parametrize("d", [1, 2, 5])
def test_samples_picture_of_any_dimension(tmp_path, d):
    x = np.random.default_rng(0).normal(size=(200, d))
    path = tmp_path / "s.png"
    save_samples_picture(path, x, title="samples")
    assert path.stat().st_size > 0


def test_titles_name_model_step_figure_and_temperature():
    caption = pictures.run_caption("glow", step=40, record={"test_bits_per_dim": 1.234567},
                                   temperature=0.7)
    assert caption == "glow, step 40, test 1.2346 bits/dim, T = 0.7"
    caption = pictures.run_caption("glow", step=40, record={"test_bits_per_dim_bound": 1.25})
    assert caption == "glow, step 40, test 1.2500 bits/dim (bound)"
    caption = pictures.run_caption(None, record={"test_nll_bound": 2.5})
    assert caption == "test NLL (bound) 2.5000 nats"
    assert pictures.run_caption(None, step=3, record={"test_nll": 2.5}) == (
        "step 3, test NLL 2.5000 nats"
    )


def poisoned(state, value):
    params = jax.tree.map(lambda a: jnp.full_like(a, value), state.params)
    return state.replace(params=params)


def one_warning(caplog):
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "\n" not in message and "skipped" in message
    return message


@pytest.mark.parametrize("d", [1, 2])
def test_nonfinite_parameters_skip_the_pictures(tmp_path, caplog, d):
    ds, model, state = vector_case(d)
    with caplog.at_level(logging.WARNING, logger="jflows"):
        assert draw(tmp_path, ds, model, poisoned(state, np.nan)) == []
    assert "not finite" in one_warning(caplog)
    assert os.listdir(tmp_path) == []


def test_nonfinite_samples_skip_the_pictures(tmp_path, caplog):
    ds, model, state = vector_case(2)
    big = state.replace(params=jax.tree.map(lambda a: a - 200.0, state.params))  # exp(200)
    with caplog.at_level(logging.WARNING, logger="jflows"):
        assert draw(tmp_path, ds, model, big) == []
    assert "samples" in one_warning(caplog)


def test_nonconverged_inverse_skips_the_pictures(tmp_path, caplog, monkeypatch):
    ds, model, state = vector_case(2)

    def fail(*args, **kwargs):
        raise InverseNotConvergedError("the fixed-point inverse of block 0 did not converge")

    monkeypatch.setattr(pictures, "draw_samples", fail)
    with caplog.at_level(logging.WARNING, logger="jflows"):
        assert draw(tmp_path, ds, model, state) == []
    assert "did not converge" in one_warning(caplog)
