"""``--cpu-dispatch sync``: set before the command's first JAX computation, or refused."""

import json
import subprocess
import sys
import textwrap

import jax
from helpers import cli_one_line

from jflows.cli import main

TRAIN = ["train", "--model", "realnvp", "--data", "moons", "--steps", "3", "--batch-size",
         "32", "--eval-every", "3", "--quiet", "--opt", "n_couplings=2", "--opt", "hidden=(8,)"]

# Records, at the moment the CLI sets the flag, whether JAX had made its clients yet.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    from jax._src import xla_bridge
    import jflows.cli

    seen = []
    update = jax.config.update

    def recording(name, value):
        if name == "jax_cpu_enable_async_dispatch":
            seen.append([value, xla_bridge.backends_are_initialized()])
        update(name, value)

    jax.config.update = recording
    code = jflows.cli.main(sys.argv[2:])
    print(json.dumps({"code": code, "seen": seen,
                      "async": jax.config.read("jax_cpu_enable_async_dispatch")}))
    """
)


def run_cli(tmp_path, *extra):
    args = [*TRAIN, "--out", str(tmp_path / "run"), "--no-compile-cache", *extra]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "-", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sync_dispatch_is_set_before_the_first_computation(tmp_path):
    result = run_cli(tmp_path, "--cpu-dispatch", "sync")
    assert result == {"code": 0, "seen": [[False, False]], "async": False}
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_default_leaves_jax_setting_alone(tmp_path, monkeypatch):
    names = []
    update = jax.config.update

    def recording(name, value):
        names.append(name)
        update(name, value)

    monkeypatch.setattr(jax.config, "update", recording)
    assert main([*TRAIN, "--out", str(tmp_path / "run"), "--no-compile-cache"]) == 0
    assert "jax_cpu_enable_async_dispatch" not in names


def test_sync_dispatch_after_jax_ran_is_refused(capsys, tmp_path):
    jax.numpy.ones(2).block_until_ready()  # this process has made its CPU client
    out = tmp_path / "run"
    cli_one_line(capsys, [*TRAIN, "--out", str(out), "--cpu-dispatch", "sync"],
                 "--cpu-dispatch sync", "fresh process",
                 "jax.config.update('jax_cpu_enable_async_dispatch', False)")
    assert not out.exists()
    assert jax.config.read("jax_cpu_enable_async_dispatch")
