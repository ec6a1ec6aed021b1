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
