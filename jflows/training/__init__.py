"""Training: train state, jitted train/eval steps, the fit loop, checkpoints, metrics, pictures.

Example:
    >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
    >>> x = jax.random.normal(key, (64, 2))
    >>> state = create_train_state(flow, optax.adam(1e-3), x, key)
    >>> step = make_train_step(flow, optax.adam(1e-3))
    >>> state, metrics = step(state, x, jax.random.key(1))
    >>> int(state.step), sorted(metrics)
    (1, ['finite', 'grad_norm', 'loss'])
"""

from jflows.training.checkpoints import Checkpointer
from jflows.training.fit import fit
from jflows.training.hybrid import (
    fit_hybrid,
    make_hybrid_eval_step,
    make_hybrid_train_step,
)
from jflows.training.metrics import evaluate_nll
from jflows.training.optim import make_optimizer
from jflows.training.runs import build_model, load_run, read_config
from jflows.training.setup import TrainedRun, make_run_config, train_run
from jflows.training.state import TrainState, create_train_state
from jflows.training.step import make_eval_step, make_lipschitz_refresh, make_train_step

__all__ = [
    "Checkpointer",
    "TrainState",
    "TrainedRun",
    "build_model",
    "create_train_state",
    "evaluate_nll",
    "fit",
    "fit_hybrid",
    "load_run",
    "make_eval_step",
    "make_hybrid_eval_step",
    "make_hybrid_train_step",
    "make_lipschitz_refresh",
    "make_optimizer",
    "make_run_config",
    "make_train_step",
    "read_config",
    "train_run",
]
