"""jflows' own calls use no deprecated JAX, Flax or Optax API.

pyproject.toml turns DeprecationWarnings attributed to jflows' modules into errors, but a library
that warns with the default stacklevel attributes the warning to itself; this test catches those
too, for the paths every run takes (building, the train step with the default optimizer, eval).
"""

import warnings

import jax
import numpy as np

from jflows.models import realnvp
from jflows.training import create_train_state, make_eval_step, make_train_step
from jflows.training.optim import make_optimizer


def test_train_and_eval_steps_use_no_deprecated_api():
    x = np.random.default_rng(0).standard_normal((32, 2)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", PendingDeprecationWarning)
        model = realnvp((2,), n_couplings=2, hidden=(8,))
        opt = make_optimizer(1e-3)
        state = create_train_state(model, opt, x, jax.random.key(0))
        state, metrics = make_train_step(model, opt)(state, x, jax.random.key(1))
        nll = make_eval_step(model)(state, x, jax.random.key(2))
    assert np.isfinite(float(metrics["grad_norm"])) and nll.shape == (32,)
