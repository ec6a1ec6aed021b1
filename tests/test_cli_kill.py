"""A `jflows train` killed with SIGKILL resumes from its last checkpoint and finishes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

STEPS = 300  # six checkpoints after the kill at the first, three evaluations


def command(out):
    return [sys.executable, "-m", "jflows.cli", "train", "--model", "realnvp", "--data", "moons",
            "--out", str(out), "--steps", str(STEPS), "--checkpoint-every", "50",
            "--eval-every", str(STEPS // 3), "--batch-size", "64", "--opt", "n_couplings=2",
            "--opt", "hidden=(16,)", "--quiet"]


def environment(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_cache")  # the rerun reuses compiles
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def finished_checkpoints(out):
    path = out / "checkpoints"
    return sorted(int(p) for p in os.listdir(path) if p.isdigit()) if path.is_dir() else []


@pytest.mark.slow
def test_sigkill_then_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    env = environment(tmp_path)
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not finished_checkpoints(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "metrics.json").exists()
    killed_at = finished_checkpoints(out)[-1]
    assert 50 <= killed_at < STEPS

    rerun = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    resumed_from = int(rerun.stderr.split("resuming from step ")[1].split()[0])
    assert resumed_from >= killed_at and resumed_from % 50 == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == STEPS and metrics["wall_time_s"] > 0
    evals = [json.loads(line)["step"] for line in (out / "evals.jsonl").read_text().splitlines()]
    assert evals == [STEPS // 3, 2 * STEPS // 3, STEPS]
    assert finished_checkpoints(out) == [STEPS - 50, STEPS]


@pytest.mark.slow
def test_console_errors_exit_2_without_traceback(tmp_path):
    args = [sys.executable, "-m", "jflows.cli", "train", "--model", "nosuch", "--data", "moons",
            "--out", str(tmp_path / "x")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120,
                            env=environment(tmp_path))
    assert result.returncode == 2
    assert "'nosuch'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_second_train_is_refused_and_a_killed_holder_does_not_block(tmp_path):
    out = tmp_path / "run"
    env = environment(tmp_path)
    long = [a if a != str(STEPS) else "1000000" for a in command(out)]  # killed long before
    first = subprocess.Popen(long, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not finished_checkpoints(out) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.poll() is None, "the first run ended before the second could start"
    config_before = (out / "config.json").read_bytes()
    second = subprocess.run(long, env=env, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first run ended before the second was refused"
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2, second.stderr
    assert len(lines) == 1 and "Traceback" not in second.stderr
    assert str(out) in lines[0] and f"process {first.pid}" in lines[0]
    assert (out / "config.json").read_bytes() == config_before

    os.kill(first.pid, signal.SIGKILL)  # the kernel drops its flock; .lock stays behind
    first.communicate()
    assert (out / ".lock").exists()
    until = finished_checkpoints(out)[-1] + 100
    rerun = [a if a != "1000000" else str(until) for a in long]
    done = subprocess.run(rerun, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from step" in done.stderr and "Traceback" not in done.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == until
