"""jflows: normalizing flows in JAX/Flax.

Layers (each imports only the ones above it): ``kernels`` (pure JAX), ``bijectors`` (linen
modules), ``models`` (Flow and factories), ``data``, ``training``, and the ``jflows`` CLI.
"""

from jflows import bijectors, kernels, models, names
from jflows.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    JflowsError,
    MissingRngError,
    ShapeError,
)
from jflows.models.evaluate import evaluate_log_prob

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "JflowsError",
    "MissingRngError",
    "ShapeError",
    "bijectors",
    "evaluate_log_prob",
    "kernels",
    "models",
    "names",
]
