"""Training: train state, jitted train/eval steps, the fit loop, checkpoints, metrics, pictures.

Example:
    >>> state = create_train_state(flow, optax.adam(1e-3), x[:500], jax.random.key(0))
    >>> step = make_train_step(flow, optax.adam(1e-3))
    >>> state, metrics = step(state, x[:500], jax.random.key(1))
"""

from jflows.training.checkpoints import Checkpointer
from jflows.training.fit import fit
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
    "load_run",
    "make_eval_step",
    "make_lipschitz_refresh",
    "make_optimizer",
    "make_run_config",
    "make_train_step",
    "read_config",
    "train_run",
]
