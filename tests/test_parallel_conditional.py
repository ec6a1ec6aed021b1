"""Conditional flows (rows ``(x, context)``) train data-parallel on two devices as on one.

The mesh-sharded steps, ``fit(devices=2)`` with its sharded evaluation, and the ``jax.pmap``
steps split the context over the devices exactly as ``x``. The checks run in a subprocess with
two virtual CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``), as in
``tests/test_parallel.py``.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import once_per_session, xla_flags_with

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "parallel_conditional.py"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("two_devices_conditional")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    def compute():
        devices = xla_flags_with("--xla_force_host_platform_device_count=2")
        env = {**os.environ, "XLA_FLAGS": devices, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
        proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                              env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    return once_per_session(tmp_path_factory, "parallel_conditional", compute)


def _tol(r):
    return 1e-4 * max(1.0, r["moved"])  # float32 rounding of differently ordered reductions


def test_mesh_steps_split_the_context_and_match_one_device(results):
    r = results
    assert "steps_and_pmap_error" not in r, r
    assert r["moved"] > 1e-3 and r["context_counts"] > 1e-3, r  # equality means something
    assert r["context_sharding"] == "P('data',)"  # the context is split like x
    assert r["sharded"] < _tol(r), r
    assert r["eval_sharded"] < 1e-5, r  # evaluate_nll with a sharding of (x, context)


def test_fit_on_two_devices_matches_one_device(results):
    r = results
    assert "fits_error" not in r, r
    assert r["fit_batch_context_sharding"] == "P('data',)" and r["fit_batch_context_devices"] == 2
    assert r["fit_params"] < 1e-4, r
    assert r["fit_test_nll"][0] == pytest.approx(r["fit_test_nll"][1], rel=1e-5)
    assert r["fit_val_nll"][0] == pytest.approx(r["fit_val_nll"][1], rel=1e-5)


def test_pmap_splits_x_and_context_and_matches_one_device(results):
    r = results
    assert "steps_and_pmap_error" not in r, r
    assert r["pmap_split_shapes"] == [[2, 32, 2], [2, 32, 1]]
    assert r["pmap"] < _tol(r), r
    assert r["pmap_eval"] < 1e-5, r
