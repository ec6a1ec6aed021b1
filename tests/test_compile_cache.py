"""The persistent compilation cache: where it lives, that a second process hits it, and that a
broken cache never breaks a run.

Each check runs in a fresh process: the cache is process-wide JAX configuration.
"""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jflows.training.cache_bounds import add_missing_access_times
from jflows.training.compile_cache import (
    DEFAULT_MAX_SIZE,
    ENV,
    MAX_SIZE_ENV,
    default_cache_dir,
    resolve_cache_dir,
)

SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import jax, jax.numpy as jnp
    from jax import monitoring
    from jflows.training.compile_cache import enable_compilation_cache
    from jflows.training.compile_cache import MIN_COMPILE_SECONDS

    hits = []
    monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if "cache_hits" in event else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        directory = enable_compilation_cache(sys.argv[1] if len(sys.argv) > 1 else None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache even tiny ones

    @jax.jit
    def f(x):
        for _ in range(20):
            x = jnp.sin(x) @ jnp.ones((8, 8)) / 8
        return x

    value = float(f(jnp.ones((4, 8))).sum())
    print(json.dumps({"dir": directory, "hits": len(hits), "value": value,
                      "warnings": [str(w.message) for w in caught]}))
    """
)


def _run(tmp_path, *args, env=None):
    script = tmp_path / "cache_probe.py"
    script.write_text(SCRIPT)
    environment = {key: value for key, value in os.environ.items() if key != ENV}
    environment.update(env or {})
    out = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                         text=True, env=environment, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == str(tmp_path / "jflows" / "xla")
    assert resolve_cache_dir() == default_cache_dir()
    monkeypatch.setenv(ENV, str(tmp_path / "env"))
    assert resolve_cache_dir() == str(tmp_path / "env")
    assert resolve_cache_dir(tmp_path / "arg") == str(tmp_path / "arg")  # the argument wins
    for off in ("0", "off", "False", "none"):
        monkeypatch.setenv(ENV, off)
        assert resolve_cache_dir() is None
    assert resolve_cache_dir(tmp_path, enabled=False) is None


@pytest.mark.slow
def test_second_process_hits_the_cache_and_a_broken_cache_does_not_break(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path, cache)
    assert first["dir"] == str(cache) and first["hits"] == 0 and os.listdir(cache)
    second = _run(tmp_path, cache)
    assert second["hits"] >= 1 and second["value"] == first["value"]
    for name in os.listdir(cache):  # corrupt every entry: a miss, recompiled, same result
        path = cache / name
        if path.is_file():
            path.write_bytes(b"not an executable")
    corrupt = _run(tmp_path, cache)
    assert corrupt["value"] == first["value"]
    blocked = tmp_path / "a_file"
    blocked.write_text("x")
    unusable = _run(tmp_path, blocked)  # a file where the directory should be: warned, off
    assert unusable["dir"] is None and unusable["value"] == first["value"]
    assert any("cannot be used" in w for w in unusable["warnings"])
    off = _run(tmp_path, env={ENV: "off"})
    assert off["dir"] is None and off["hits"] == 0


@pytest.mark.slow
def test_cli_flags_choose_the_cache(tmp_path):
    # a user's process: XLA's optimisations on
    environment = {key: value for key, value in os.environ.items()
                   if key not in (ENV, "JAX_DISABLE_MOST_OPTIMIZATIONS")}
    base = [sys.executable, "-m", "jflows.cli", "train", "--model", "realnvp", "--data",
            "moons", "--steps", "4", "--eval-every", "4", "--quiet", "--batch-size", "64",
            "--opt", "n_couplings=2", "--opt", "hidden=(8,)"]
    cache = tmp_path / "cache"
    on = subprocess.run([*base, "--out", str(tmp_path / "a"), "--compile-cache", str(cache)],
                        capture_output=True, text=True, env=environment, timeout=300)
    assert on.returncode == 0, on.stderr[-2000:]
    assert cache.is_dir() and os.listdir(cache)  # the executables were stored
    off = subprocess.run([*base, "--out", str(tmp_path / "b"), "--compile-cache",
                          str(tmp_path / "unused"), "--no-compile-cache"],
                         capture_output=True, text=True, env=environment, timeout=300)
    assert off.returncode == 0, off.stderr[-2000:]
    assert not (tmp_path / "unused").exists()
    # nor the default directory (fit once turned it on behind --no-compile-cache)
    default_off = subprocess.run(
        [*base, "--out", str(tmp_path / "c"), "--no-compile-cache"], capture_output=True,
        text=True, env={**environment, "XDG_CACHE_HOME": str(tmp_path / "xdg")}, timeout=300)
    assert default_off.returncode == 0, default_off.stderr[-2000:]
    assert not (tmp_path / "xdg" / "jflows").exists()  # matplotlib may keep its own there


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(["--no-compile-cache"], False), (["--compile-cache", "DIR"], "DIR"), ([], None)],
)
def test_cli_passes_its_cache_choice_to_fit(tmp_path, monkeypatch, flags, expected):
    """``fit`` turns the cache on by default: the command line must hand it its own choice."""
    from jflows.cli import main

    fit_module = importlib.import_module("jflows.training.fit")  # the module, not the function

    cli_calls, fit_calls = [], []
    monkeypatch.setattr("jflows.cli.enable_compilation_cache",
                        lambda path=None, enabled=True: cli_calls.append((path, enabled)))
    monkeypatch.setattr(fit_module, "enable_compilation_cache",
                        lambda path=None: fit_calls.append(path))
    flags = [str(tmp_path / "cache") if flag == "DIR" else flag for flag in flags]
    args = ["train", "--model", "realnvp", "--data", "moons", "--steps", "2", "--eval-every",
            "2", "--quiet", "--batch-size", "32", "--opt", "n_couplings=2", "--opt",
            "hidden=(8,)", "--out", str(tmp_path / "run"), *flags]
    assert main(args) == 0
    if expected is False:
        assert cli_calls == [(None, False)] and fit_calls == []
    elif expected == "DIR":
        assert fit_calls == [str(tmp_path / "cache")]
    else:  # the default: the CLI's directory, which fit keeps
        assert cli_calls == [(None, True)] and fit_calls == [None]


FIT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    from jax import monitoring
    from jflows.data import load_dataset
    from jflows.models import realnvp
    from jflows.training import fit

    counts = {"requests": 0, "hits": 0}

    def listen(event, **_):
        if event == "/jax/compilation_cache/compile_requests_use_cache":
            counts["requests"] += 1
        elif event == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1

    monitoring.register_event_listener(listen)
    flow = realnvp((2,), n_couplings=2, hidden=(8,))
    data = load_dataset("moons", n_train=256, n_test=64)
    state, history = fit(flow, flow, data, steps=3, batch_size=32, eval_every=3,
                         checkpoint_every=3, eval_batch_size=64, progress=False,
                         val_fraction=0.0, compile_cache=sys.argv[1])
    params = [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(state.params)]
    print(json.dumps({**counts, "params": params, "nll": history[-1]["test_nll"]}))
    """
)


@pytest.mark.slow
def test_fit_restarts_from_the_cache_and_survives_a_corrupt_one(tmp_path):
    """A restart of ``fit`` compiles nothing (every executable, down to the key splits, comes
    from the cache); a cold cache and a corrupt one train to the same parameters."""
    script = tmp_path / "fit_probe.py"
    script.write_text(FIT_SCRIPT)
    environment = {key: value for key, value in os.environ.items() if key != ENV}
    cache = tmp_path / "cache"

    def run():
        out = subprocess.run([sys.executable, str(script), str(cache)], capture_output=True,
                             text=True, env=environment, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold = run()
    assert cold["hits"] == 0 and cold["requests"] > 0 and os.listdir(cache)
    warm = run()
    assert warm["hits"] == warm["requests"] == cold["requests"]  # nothing compiled again
    assert warm["params"] == cold["params"] and warm["nll"] == cold["nll"]
    for path in cache.iterdir():  # a corrupt cache: every entry garbage
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    corrupt = run()
    assert corrupt["hits"] == 0 and corrupt["params"] == cold["params"]


BOUND_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    import jax, jax.numpy as jnp
    from jflows.training.cache_bounds import max_size
    from jflows.training.compile_cache import enable_compilation_cache

    cache = sys.argv[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enable_compilation_cache(cache)
        bound = max_size()
        if len(sys.argv) > 2:  # a bound small enough that the next entry evicts the old one
            jax.config.update("jax_compilation_cache_max_size", int(sys.argv[2]))
        value = float(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(4)).sum())
    print(json.dumps({"bound": bound, "files": sorted(os.listdir(cache)), "value": value,
                      "warnings": [str(w.message) for w in caught]}))
    """
)


def _bound_run(tmp_path, *args, env=None):
    script = tmp_path / "bound_probe.py"
    script.write_text(BOUND_SCRIPT)
    environment = {key: value for key, value in os.environ.items()
                   if key not in (ENV, MAX_SIZE_ENV)}
    environment.update(env or {})
    out = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                         text=True, env=environment, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cache_is_bounded_and_entries_of_an_unbounded_cache_can_be_evicted(tmp_path):
    """The default bound is set; an entry written while the cache was unbounded (no access-time
    file, which JAX's eviction needs) gets one, and is evicted first when the bound is reached,
    without a warning; a bound the user set (here: unbounded) is kept."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "old-cache").write_bytes(b"\x00" * 200_000)  # from an unbounded cache
    os.utime(cache / "old-cache", ns=(10**18, 10**18))  # 2001: the least recently used
    bounded = _bound_run(tmp_path, cache, 100_000)
    assert bounded["bound"] == DEFAULT_MAX_SIZE
    assert "old-cache" not in bounded["files"] and "old-atime" not in bounded["files"]
    assert any(name.endswith("-cache") for name in bounded["files"])  # the new executables
    assert bounded["warnings"] == []

    (cache / "old-cache").write_bytes(b"\x00" * 200_000)
    unbounded = _bound_run(tmp_path, cache, env={MAX_SIZE_ENV: "-1"})
    assert unbounded["bound"] == -1 and "old-cache" in unbounded["files"]
    assert unbounded["value"] == bounded["value"]


def test_add_missing_access_times_orders_old_entries_by_their_age(tmp_path):
    (tmp_path / "a-cache").write_bytes(b"1")
    os.utime(tmp_path / "a-cache", ns=(5, 5))
    (tmp_path / "b-cache").write_bytes(b"2")
    (tmp_path / "b-atime").write_bytes((7).to_bytes(8, "little"))
    (tmp_path / "unrelated.txt").write_text("x")
    assert add_missing_access_times(tmp_path) == 1
    assert int.from_bytes((tmp_path / "a-atime").read_bytes(), "little") == 5
    assert int.from_bytes((tmp_path / "b-atime").read_bytes(), "little") == 7  # left alone
    assert add_missing_access_times(tmp_path) == 0
    assert add_missing_access_times(tmp_path / "missing") == 0


SHARED_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import jax, jax.numpy as jnp
    from jflows.training.compile_cache import enable_compilation_cache

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enable_compilation_cache(sys.argv[1])
        jax.config.update("jax_compilation_cache_max_size", 60_000)  # evicts while both write
        tag = int(sys.argv[2])
        values = [float(jax.jit(lambda x, i=i: jnp.sin(x + i) * (tag + 1))(jnp.ones(8)).sum())
                  for i in range(30)]
    print(json.dumps({"values": values, "warnings": [str(w.message) for w in caught]}))
    """
)


@pytest.mark.slow
def test_two_processes_share_a_bounded_cache_while_it_evicts(tmp_path):
    script = tmp_path / "shared_probe.py"
    script.write_text(SHARED_SCRIPT)
    environment = {key: value for key, value in os.environ.items()
                   if key not in (ENV, MAX_SIZE_ENV)}
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, str(script), str(cache), str(tag)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=environment) for tag in (0, 1)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, stderr[-2000:]
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outs]
    expected = [float(8 * np.sin(1.0 + i)) for i in range(30)]
    for tag, result in enumerate(results):
        np.testing.assert_allclose(result["values"], np.multiply(expected, tag + 1), rtol=1e-5)
        assert result["warnings"] == []
    entries = sum(path.stat().st_size for path in cache.glob("*-cache"))
    assert 0 < entries <= 60_000
