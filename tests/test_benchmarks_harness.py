"""The benchmark harness still runs against the current API (W2 for a few steps, JAX stacks).

Timings are not checked (never assert on wall time); the point is that an API change cannot
break ``benchmarks/`` unnoticed.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workload", "stacks"),
    [("w2_realnvp2d", ["jflows", "floor"]), ("w4_resflow_digits", ["jflows"])],
)
def test_workload_runs_a_few_steps(workload, stacks):
    cmd = [sys.executable, "-m", f"benchmarks.workloads.{workload}", "--steps", "6",
           "--stacks", *stacks]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "jflows" in done.stdout and "ms/step" in done.stdout


def test_harness_bits_per_dim_is_jflows(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.harness import common
    from jflows.data import bits_per_dim

    for nll, dims in ((0.0, 64), (181.3, 64), (-12.5, 2), (1e4, 3072)):
        assert common.bits_per_dim(nll, dims) == pytest.approx(float(bits_per_dim(nll, dims)),
                                                               rel=1e-15)


@pytest.mark.slow
def test_torch_stacks_import_no_jax():
    """A PyTorch stack's peak RSS is its own: its process imports neither JAX nor jflows."""
    pytest.importorskip("normflows")
    for workload in ("w3_glow_digits", "w4_resflow_digits"):
        cmd = [sys.executable, "-m", f"benchmarks.workloads.{workload}", "--steps", "6",
               "--stacks", "normflows", "--torch-threads", "1"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "normflows: ok" in done.stdout, done.stdout
        assert "also imported" not in done.stdout, done.stdout


@pytest.mark.slow
def test_w5_log_prob_runs_on_a_few_points():
    """W5 (a throughput script, not a Workload): every model, jflows and one JAX peer."""
    cmd = [sys.executable, "-m", "benchmarks.workloads.w5_log_prob", "--points", "300",
           "--batch", "128", "--repeats", "1", "--stacks", "jflows", "distrax", "floor"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("points/s") >= 3 and "failed" not in done.stdout, done.stdout
    assert "realnvp: jflows / best peer (distrax) points/s" in done.stdout
    assert "a bare (128, 128) @ (128, 128) product runs at" in done.stdout, done.stdout


def test_w5_realnvp_flop_line(monkeypatch):
    """The FLOP count is the MLPs' matrix products; 2x a peer needs twice its GFLOP/s."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.workloads import w5_log_prob as w5

    assert w5.realnvp_flops_per_point() == 2 * 8 * (1 * 128 + 128 * 128 + 128 * 2)
    ok = dict(status="ok", batch=10_000)
    results = {"jflows": {**ok, "points_per_s": 5e5}, "distrax": {**ok, "points_per_s": 4e5},
               "floor": {**ok, "points_per_s": 6e5, "matmul_gflops": 150.0}}
    line = w5.goal("realnvp", results)
    assert "jflows runs them at 134 GFLOP/s, the best peer at 107" in line, line
    assert "(800,000 points/s) needs 215 GFLOP/s" in line, line
    assert "product runs at 150 GFLOP/s here" in line, line
