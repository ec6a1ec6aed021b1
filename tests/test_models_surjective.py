"""The surjective model factories train: the augmented flow leaves its starting point."""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest

from jflows import models as jm
from jflows.data import sample_toy
from jflows.training import create_train_state, make_optimizer, make_train_step


def _losses(flow, x, steps=150, lr=1e-3):
    optimizer = make_optimizer(lr)
    state = create_train_state(flow, optimizer, x[:256], jax.random.key(0))
    step = make_train_step(flow, optimizer)
    rng = np.random.default_rng(0)
    losses = []
    for i in range(steps):
        batch = x[rng.integers(0, len(x), 256)]
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    return np.array(losses)


def test_augmented_flow_trains_from_its_initialisation():
    """At initialisation q(a | x) = N(0, I) and the couplings are identities; split as (x | a)
    the ELBO's gradient vanishes in expectation and the loss stays put (it did, before the
    factory interleaved x and a). The interleaved model learns like a RealNVP."""
    x = sample_toy("8gaussians", 4096, seed=0)
    x = (x - x.mean(0)) / x.std(0)  # standardised, as the command line does
    flow = jm.augmented((2,), augment=2, n_couplings=2, hidden=(32,), q_hidden=(16,))
    losses = _losses(flow, x, lr=1e-3)
    first, last = losses[:10].mean(), losses[-10:].mean()
    # interleaved: 2.839 -> 2.713 nats; split as (x | a): 2.845 -> 2.841
    assert last < first - 0.05, f"augmented flow did not train: {first:.3f} -> {last:.3f}"


def test_interleaved_order():
    assert jm.augmented.__module__ == "jflows.models.augmented"
    from jflows.models.augmented import interleaved

    assert interleaved(2, 2) == (0, 2, 1, 3)
    assert interleaved(3, 1) == (0, 3, 1, 2)
    assert sorted(interleaved(5, 3)) == list(range(8))


def test_absolute_and_augmented_forward_every_coupling_option_to_realnvp():
    """Their couplings are realnvp's with the same options (one shared list of names)."""
    from jflows.models.vector_couplings import COUPLING_OPTIONS, vector_couplings

    options = dict(n_couplings=4, hidden=(5, 7), scale_map="exp", actnorm=True, unroll=2)
    assert set(options) == set(COUPLING_OPTIONS)
    for factory in (jm.realnvp, jm.absolute, jm.augmented):
        assert set(COUPLING_OPTIONS) <= set(inspect.signature(factory).parameters)
    absolute = jm.absolute((3,), learned_signs=False, **options).bijector.bijectors[1]
    augmented = jm.augmented((3,), augment=2, **options).bijector.bijectors[2]
    assert repr(absolute) == repr(jm.realnvp((3,), **options).bijector)
    assert repr(augmented) == repr(jm.realnvp((5,), **options).bijector)
    assert repr(absolute) != repr(jm.realnvp((3,), **{**options, "unroll": 1}).bijector)
    with pytest.raises(TypeError, match="lacks"):
        vector_couplings((3,), "float32", {"n_couplings": 2})
