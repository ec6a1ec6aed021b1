"""Helpers shared by the test files (imported as ``from helpers import ...``, like ``registry``).

Test data comes from numpy so that set-up compiles no JAX programs.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from jflows.kernels import FixedPointInfo


def randn(seed, shape, dtype=jnp.float32):
    """Standard normal test data from numpy (no JAX compilation in test set-up)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def z_threshold(m: int, family_alpha: float = 0.01) -> float:
    """Bonferroni z for ``m`` two-sided comparisons, never below 3 standard errors."""
    return max(3.0, float(ndtri(1.0 - family_alpha / (2 * m))))


def contractive_mlp(seed, d, hidden, lip, dtype=jnp.float32, aligned=True):
    """Params of g(x) = act(x W1 + b1) W2 with ||W1||_2 ||W2||_2 = lip, so Lip(g) <= lip in l2.

    With ``aligned`` W2 leans towards W1^T and b1 is small, so that the log-det series terms are
    not all tiny (the estimator tests need power); without it W2 and b1 are independent normals.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((d, hidden))
    w2 = rng.standard_normal((hidden, d))
    if aligned:
        w2 = w1.T + 0.5 * w2
    w1 = w1 / np.linalg.norm(w1, 2) * math.sqrt(lip)
    w2 = w2 / np.linalg.norm(w2, 2) * math.sqrt(lip)
    b1 = (0.3 if aligned else 1.0) * rng.standard_normal(hidden)
    return {
        "w1": jnp.asarray(w1, dtype),
        "b1": jnp.asarray(b1, dtype),
        "w2": jnp.asarray(w2, dtype),
    }


def lipswish(z):
    """1-Lipschitz Swish with beta = 1: z sigmoid(z) / 1.1."""
    return z * jax.nn.sigmoid(z) / 1.1


def mlp(params, activation=jnp.tanh):
    """The map x -> activation(x W1 + b1) W2 of :func:`contractive_mlp`'s parameters."""
    return lambda x: activation(x @ params["w1"] + params["b1"]) @ params["w2"]


def is_info(a) -> bool:
    """``is_leaf`` for tree maps over results that hold :class:`FixedPointInfo` records."""
    return isinstance(a, FixedPointInfo)


def read_json(path):
    """The JSON document in the file at ``path``."""
    return json.loads(path.read_text())


def cli_fails(capsys, args, *needles):
    """Run ``jflows`` in-process; it must exit 2 without a traceback, naming every needle."""
    from jflows.cli import main

    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def cli_one_line(capsys, args, *needles):
    """As :func:`cli_fails`, and the message is one line."""
    err = cli_fails(capsys, args, *needles)
    assert len(err.strip().splitlines()) == 1, err
    return err
