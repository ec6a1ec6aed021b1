"""One training path for any number of devices, equal to the one-device run; pmap beside it.

The checks run in subprocesses with four virtual CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``), which must be set before JAX starts.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import once_per_session, xla_flags_with

SCRIPTS = pathlib.Path(__file__).parent / "scripts"

# subprocesses with four virtual devices; one xdist group, so the other worker is not left
# waiting for their shared result
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("four_devices")]


def _run_script(name, *args):
    # the compiler set up as for the in-process tests (tests/conftest.py, its flags kept):
    # the scripts' tiny programs spend far longer compiling than running
    env = {**os.environ, "XLA_FLAGS": xla_flags_with("--xla_force_host_platform_device_count=4"),
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return once_per_session(
        tmp_path_factory, "parallel_equivalence", lambda: _run_script("parallel_equivalence.py")
    )


@pytest.fixture(scope="module")
def fit_paths(tmp_path_factory):
    def compute():
        return _run_script("fit_paths.py", tmp_path_factory.mktemp("fit_paths"))

    return once_per_session(tmp_path_factory, "fit_paths", compute)


@pytest.mark.parametrize("model", ["realnvp", "resflow_exact", "resflow_roulette", "glow"])
def test_four_device_step_equals_one_device_step(results, model):
    r = results[model]
    assert r["moved"] > 1e-3  # training changed the parameters, so equality means something
    tol = 1e-4 * max(1.0, r["moved"])  # float32 rounding of differently ordered reductions
    assert r["init"] < 1e-5  # ActNorm initialised from global, not per-device, statistics
    assert r["sharded"] < tol, r
    assert r["sharded_lipschitz"] < 1e-4, r
    # the state is replicated (spec P()) over the 4-device data mesh, and one device is a
    # one-device mesh; mesh=None is that mesh
    assert "'data': 4" in r["sharded_is_sharded"] and "spec=P()" in r["sharded_is_sharded"]
    assert "'data': 1" in r["single_is_sharded"] and "spec=P()" in r["single_is_sharded"]
    assert r["default_mesh"] == 0.0


def test_one_and_four_devices_run_the_same_lines_of_fit(fit_paths):
    r = fit_paths
    # not one line of jflows/training runs for one device count and not the other
    assert r["only_one_device"] == [] and r["only_four_devices"] == [], r
    assert r["lines_ran"] > 100  # the trace saw fit, its steps and its files
    assert r["steps"] == [[3, 6], [3, 6]]
    assert r["test_nll"][0] == pytest.approx(r["test_nll"][1], rel=1e-5)
    assert r["val_nll"][0] == pytest.approx(r["val_nll"][1], rel=1e-5)
    assert r["params"] < 1e-4


@pytest.mark.parametrize("model", ["realnvp", "resflow_exact"])
def test_pmap_step_equals_single_device(results, model):
    r = results[model]  # these models draw no noise in training
    assert r["pmap"] < 1e-4 * max(1.0, r["moved"]), r
    assert r["pmap_replicas_equal"] == 0.0


@pytest.mark.parametrize("model", ["resflow_roulette", "glow"])
def test_pmap_with_stochastic_layers_keeps_replicas_in_step(results, model):
    r = results[model]
    assert r["pmap_replicas_equal"] == 0.0  # pmean keeps every replica identical
    # per-replica draws (probes, roulette lengths, dequantization noise): another draw of the
    # noise, as far from the one-device run as the one-device run with other step keys
    assert r["key_spread"] > 0
    assert r["pmap"] < 2 * r["key_spread"], r
