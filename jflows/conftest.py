"""Doctest setup: every docstring example in ``jflows/`` runs as a test.

``pytest`` collects them (``--doctest-modules`` and ``testpaths`` in pyproject.toml);
``pytest jflows`` runs only them. Each example starts in a fresh temporary working directory
(whatever it writes lands there) with these names defined: ``jax``, ``jnp``, ``np``, ``nn``
(``flax.linen``), ``optax``, ``functools``, ``jflows`` and ``key = jax.random.key(0)``. An
example that mentions ``runs/moons`` finds there a tiny finished run of ``jflows train``
(RealNVP on moons, 4 steps, evaluated every 2), trained once per session. Output is compared
with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` (pyproject.toml).
"""

import functools
import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jflows

# Compile time dominates tiny examples, as in the unit tests (tests/conftest.py, which also sets
# the faster-compiling XLA:CPU emitter when pytest runs both test paths).
jax.config.update("jax_disable_most_optimizations", True)

HERE = pathlib.Path(__file__).resolve().parent


RUN = "runs/moons"
TINY_RUN = dict(
    model="realnvp", data="moons", steps=4, eval_every=2, checkpoint_every=4, batch_size=64,
    options={"n_couplings": 2, "hidden": (8,)},
)
"""The run that examples mentioning RUN find in their working directory."""

# Examples that train a run end to end or initialise a residual flow (seconds each): slow, like
# the training tests (CI still runs them).
DOCTEST_SLOW = {
    "jflows.models.diagnostics.residual_diagnostics",
    "jflows.training.setup.train_run",
}


def _uses_run(item) -> bool:
    return any(RUN in example.source for example in item.dtest.examples)


def pytest_collection_modifyitems(config, items):
    """Marks DOCTEST_SLOW and the users of RUN slow (RUN on one worker)."""
    for item in items:
        if not isinstance(item, pytest.DoctestItem):
            continue
        path = pathlib.Path(item.path).resolve()
        if not path.is_relative_to(HERE):
            continue
        if item.name in DOCTEST_SLOW:
            item.add_marker(pytest.mark.slow)
        if _uses_run(item):  # they need a training run: slow, and all on one pytest-xdist worker
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("doctest_run"))


@pytest.fixture(scope="session")
def _tiny_run(tmp_path_factory):
    from jflows.training import train_run

    out = tmp_path_factory.mktemp("doctest_run") / "moons"
    settings = dict(TINY_RUN)
    train_run(settings.pop("model"), settings.pop("data"), out, **settings)
    return out


@pytest.fixture(autouse=True)
def _doctest_setup(request, doctest_namespace, tmp_path, monkeypatch):
    """The names every example may use, a temporary working directory and RUN if needed."""
    monkeypatch.chdir(tmp_path)
    if isinstance(request.node, pytest.DoctestItem) and _uses_run(request.node):
        shutil.copytree(request.getfixturevalue("_tiny_run"), tmp_path / RUN)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    doctest_namespace.update(
        functools=functools, jax=jax, jnp=jnp, np=np, nn=nn, optax=optax, jflows=jflows,
        key=jax.random.key(0),
    )
