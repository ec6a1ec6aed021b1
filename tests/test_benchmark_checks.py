"""The one-off benchmark checks still run: ``benchmarks.gpu_check`` (on CPU here) and the
warm-start investigation. Timings are printed, never asserted."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_gpu_check_finds_no_host_sync_in_the_w2_step():
    out = _run("benchmarks.gpu_check", "--workloads", "w2", "--steps", "4")
    row = next(line for line in out.splitlines() if line.startswith("w2 "))
    # device, state on it, float32, no recompilation, no transfer, no callback, finite
    assert "cpu" in row and " yes " in row and "float32" in row, out
    assert row.split()[-4:] == ["none", "none", "0", "yes"], out


@pytest.mark.slow
def test_warm_start_second_run_loads_from_the_cache():
    out = _run("benchmarks.investigations.warm_start", "--workloads", "w1", "--paths",
               "harness", "--steps", "2")
    row = next(line for line in out.splitlines() if line.startswith("w1 "))
    hits, compiled = row.split()[-3], row.split()[-1]
    assert int(hits) > 0 and compiled == "0", out
