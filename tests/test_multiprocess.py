"""Two processes on localhost (CPU collectives through gloo), and ``--devices 4`` on four
virtual CPU devices, train to the one-device result."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import once_per_session

from jflows.training import load_run

# subprocess runs of the CLI; one xdist group (the other worker does not wait for them)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("two_processes")]

ARGS = ["--model", "resflow", "--data", "moons", "--steps", "12", "--eval-every", "6",
        "--checkpoint-every", "6", "--batch-size", "64", "--opt", "n_blocks=2",
        "--opt", "hidden=(16,)", "--quiet"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jflows(*args):
    return [sys.executable, "-m", "jflows.cli", *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return once_per_session(tmp_path_factory, "multiprocess_runs", lambda: _train(tmp_path_factory))


def _train(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiprocess")
    multi, single, devices = root / "two_processes", root / "one_process", root / "four_devices"
    coordinator = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # most XLA optimisation passes skipped, as for the in-process tests (tests/conftest.py):
    # compiling, not running, is what these short runs spend their time on
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    procs = [
        subprocess.Popen(
            _jflows("train", *ARGS, "--out", str(multi), "--coordinator", coordinator,
                    "--num-processes", "2", "--process-id", str(i)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    done = subprocess.run(_jflows("train", *ARGS, "--out", str(single)), capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    env4 = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(_jflows("train", *ARGS, "--out", str(devices), "--devices", "4"),
                          capture_output=True, text=True, env=env4, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return multi, single, devices, outs


def test_both_processes_trained_the_same_model(runs):
    *_, outs = runs
    logs = [err for _, err in outs]
    assert all("step 12: test_nll" in log for log in logs)
    last = [log.split("step 12: test_nll")[1].split()[0] for log in logs]
    assert last[0] == last[1]


@pytest.mark.parametrize("which", [0, 2], ids=["two_processes", "four_devices"])
def test_parallel_runs_match_one_device(runs, which):
    parallel, single = runs[which], runs[1]
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (parallel, single)]
    assert metrics[0]["steps"] == metrics[1]["steps"] == 12
    assert metrics[0]["test_nll"] == pytest.approx(metrics[1]["test_nll"], abs=1e-5)
    a, b = load_run(parallel).state.params, load_run(single).state.params
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                             jax.tree.leaves(b)))
    assert diff < 1e-5
